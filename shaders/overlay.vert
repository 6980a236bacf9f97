#version 330
// "Searching for a face" indicator: a small quad given in pixels (x right, y down).

in vec2 in_corner;  // (-1..1, -1..1)

uniform vec2 u_centre;  // pixels
uniform float u_radius; // pixels
uniform vec2 u_size;    // framebuffer size in pixels

out vec2 v_corner;

void main() {
    vec2 pixel = u_centre + in_corner * u_radius;
    gl_Position = vec4(pixel * 2.0 / u_size - 1.0, 0.0, 1.0);
    v_corner = in_corner;
}
