#version 330
// Avatar vertex shader: head-frame geometry (cm) -> the camera -> pixels.
// The face view uses a pinhole camera, the one the retargeter assumes (proxy/avatar/camera.py):
// each eye is then seen from its own direction, as a real camera sees a patient. With
// u_focal = 0 (the eye close-up) it is weak perspective: u_scale pixels per cm from u_origin.
// The framebuffer's row 0 is the image's top row, so the read-back needs no flip.

in vec3 in_position;
in vec3 in_normal;
in vec3 in_colour;

uniform mat3 u_local;     // eyeball rotation (identity for the head)
uniform vec3 u_offset;    // eyeball centre in the head frame (zero for the head)
uniform mat3 u_head;      // head rotation in the camera's frame
uniform float u_scale;    // weak perspective: pixels per cm
uniform vec2 u_origin;    // weak perspective: template origin in pixels (x right, y down, centres at integers)
uniform float u_focal;    // pinhole: focal length in pixels (0: weak perspective)
uniform vec2 u_centre;    // pinhole: principal point in pixels
uniform vec3 u_position;  // pinhole: template origin in the camera's frame (cm; y up, the camera looks along -z)
uniform vec2 u_size;      // framebuffer size in pixels
uniform float u_depth;    // cm -> clip depth

out vec3 v_normal;
out vec3 v_colour;
out vec3 v_local;
out vec3 v_head;      // head-frame position (cm): the eyeball's socket, which does not turn with it

void main() {
    vec3 head = u_local * in_position + u_offset;
    vec3 camera = u_head * head;
    vec2 pixel;
    float w = 1.0;
    if (u_focal > 0.0) {
        vec3 p = camera + u_position;
        pixel = u_centre + u_focal * vec2(p.x, -p.y) / -p.z;
        w = p.z / u_position.z;  // 1 at the head's origin: perspective-correct varyings, depth as before
    } else {
        pixel = u_origin + u_scale * vec2(camera.x, -camera.y);
    }
    vec2 ndc = (pixel + 0.5) * 2.0 / u_size - 1.0;
    gl_Position = vec4(ndc * w, -camera.z * u_depth * w, w);
    v_normal = u_head * (u_local * in_normal);
    v_colour = in_colour;
    v_local = in_position;
    v_head = head;
}
