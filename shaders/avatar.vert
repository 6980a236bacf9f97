#version 330
// Avatar vertex shader: head-frame geometry (cm) -> weak-perspective camera -> pixels.
// The framebuffer's row 0 is the image's top row, so the read-back needs no flip.

in vec3 in_position;
in vec3 in_normal;
in vec3 in_colour;

uniform mat3 u_local;   // eyeball rotation (identity for the head)
uniform vec3 u_offset;  // eyeball centre in the head frame (zero for the head)
uniform mat3 u_head;    // head rotation R = Rz(roll) Ry(yaw) Rx(-pitch)
uniform float u_scale;  // pixels per cm
uniform vec2 u_origin;  // template origin in pixels (x right, y down, pixel centres at integers)
uniform vec2 u_size;    // framebuffer size in pixels
uniform float u_depth;  // cm -> clip depth

out vec3 v_normal;
out vec3 v_colour;
out vec3 v_local;

void main() {
    vec3 head = u_local * in_position + u_offset;
    vec3 camera = u_head * head;
    vec2 pixel = u_origin + u_scale * vec2(camera.x, -camera.y);
    vec2 ndc = (pixel + 0.5) * 2.0 / u_size - 1.0;
    gl_Position = vec4(ndc, -camera.z * u_depth, 1.0);
    v_normal = u_head * (u_local * in_normal);
    v_colour = in_colour;
    v_local = in_position;
}
