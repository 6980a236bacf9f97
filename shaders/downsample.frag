#version 330
// Box filter: each output pixel is the mean of the u_factor x u_factor pixels drawn for it.
// Supersampling this way antialiases every edge and shading detail alike, so a small face
// looks like a large one scaled down instead of a differently aliased picture.

uniform sampler2D u_source;  // the avatar drawn at u_factor times the output's size
uniform int u_factor;

out vec4 f_colour;

void main() {
    ivec2 base = ivec2(gl_FragCoord.xy) * u_factor;
    vec4 sum = vec4(0.0);
    for (int y = 0; y < u_factor; ++y) {
        for (int x = 0; x < u_factor; ++x) {
            sum += texelFetch(u_source, base + ivec2(x, y), 0);
        }
    }
    f_colour = sum / float(u_factor * u_factor);
}
