#version 330
// A text-free spinner: a ring whose bright arc turns with the stream time u_phase
// (a parameter, so the same parameters still give the same picture).

in vec2 v_corner;

uniform float u_phase;  // turns

out vec4 f_colour;

const float TAU = 6.28318530718;

void main() {
    float r = length(v_corner);
    float ring = smoothstep(0.62, 0.7, r) * (1.0 - smoothstep(0.9, 0.98, r));
    if (ring <= 0.0) {
        discard;
    }
    float angle = atan(v_corner.x, -v_corner.y) / TAU + 0.5;  // 0..1, clockwise from the top
    float arc = fract(angle - u_phase);
    float bright = 0.35 + 0.65 * smoothstep(0.55, 1.0, arc);
    f_colour = vec4(vec3(0.80, 0.85, 0.92) * bright, ring);
}
