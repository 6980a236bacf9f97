#version 330
// A quad over the whole framebuffer (for the supersampled avatar's downsampling pass).

in vec2 in_corner;  // (-1..1, -1..1)

void main() {
    gl_Position = vec4(in_corner, 0.0, 1.0);
}
