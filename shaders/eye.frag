#version 330
// Eyeball fragment shader: paints the eyeball procedurally from its local direction (sclera,
// iris cap with a dark limbus, pupil; colours the same for everyone) and lights it like the
// skin (skin.frag) with a sharper, stronger highlight.

in vec3 v_normal;
in vec3 v_colour;
in vec3 v_local;
in vec3 v_head;

uniform float u_eye_radius;    // cm
uniform float u_iris_radius;   // cm (11.7 mm across / 2)
uniform float u_pupil_radius;  // cm
uniform float u_dim;           // 1 = normal, < 1 while searching for a face
uniform vec2 u_lid_corner;     // this eye's outer corner, head frame (cm)
uniform vec2 u_lid_axis;       // unit vector to its inner corner
uniform float u_lid_width;     // corner to corner (cm)
uniform vec2 u_lid_margins;    // upper and lower margins' heights above the corner line (cm; lower < 0)

out vec4 f_colour;

const vec3 KEY = normalize(vec3(0.0, 0.55, 1.0));
const vec3 FILL = normalize(vec3(0.0, -0.2, 1.0));
const vec3 HALFWAY = normalize(KEY + vec3(0.0, 0.0, 1.0));
const vec3 SCLERA = vec3(0.93, 0.91, 0.88);
const vec3 IRIS = vec3(0.36, 0.25, 0.17);
const vec3 LIMBUS = vec3(0.10, 0.07, 0.05);
const vec3 PUPIL = vec3(0.02, 0.02, 0.02);
// A narrowing fissure darkens as its lids and lashes close over it, as on a real face; the trackers
// read a bright slit as an open eye. The shadow reaches this far below the upper margin and above the
// lower one (cm) in a fissure opened NARROW.y or less, is this dark at a margin, and fades out as the
// fissure opens to NARROW.x: an eye open that far or more is drawn as before (its gaze reads the same).
const float SHADOW_UPPER = 0.35;
const float SHADOW_LOWER = 0.14;
const vec2 NARROW = vec2(0.2, 0.08);  // eye widths: no shadow from x up, all of it from y down
const float SHADOW_FLOOR = 0.25;
const float LID_PROFILE = 0.75;  // proxy/avatar/mesh.py LID_PROFILE_POWER

float lid_light(vec2 p) {
    vec2 rel = p - u_lid_corner;
    float s = 2.0 * dot(rel, u_lid_axis) / u_lid_width - 1.0;
    float profile = pow(max(1.0 - s * s, 0.0), LID_PROFILE);
    vec2 up = vec2(-u_lid_axis.y, u_lid_axis.x);
    float h = dot(rel, up.y < 0.0 ? -up : up);
    float below_upper = u_lid_margins.x * profile - h;
    float above_lower = h - u_lid_margins.y * profile;
    // (smoothstep's edges must rise: it is undefined for edge0 >= edge1)
    float narrow = 1.0 - smoothstep(NARROW.y, NARROW.x, (u_lid_margins.x - u_lid_margins.y) / u_lid_width);
    float light = smoothstep(0.0, SHADOW_UPPER, below_upper) * smoothstep(0.0, SHADOW_LOWER, above_lower);
    return mix(1.0, mix(SHADOW_FLOOR, 1.0, light), narrow);
}

vec3 eye_colour(vec3 p) {
    vec3 d = normalize(p);
    float rho = u_eye_radius * length(d.xy);  // distance from the optical axis (cm)
    if (d.z <= 0.0) {
        return SCLERA * 0.6;
    }
    // Edges are blended over one pixel (fwidth): without antialiasing the iris jumps a whole
    // pixel at a time and the eye trackers reading the avatar see that as jitter.
    float aa = max(fwidth(rho), 1e-4);
    float t = clamp((rho - u_pupil_radius) / (u_iris_radius - u_pupil_radius), 0.0, 1.0);
    float angle = atan(d.y, d.x);
    float fibres = 0.9 + 0.1 * sin(angle * 37.0) * sin(angle * 11.0 + t * 6.0);
    vec3 iris = mix(IRIS * fibres * (1.1 - 0.3 * t), LIMBUS, smoothstep(0.72, 0.98, t));
    iris = mix(PUPIL, iris, smoothstep(u_pupil_radius - aa, u_pupil_radius + aa, rho));
    // sclera, a little darker towards the corners of the eye
    float edge = smoothstep(u_iris_radius, u_iris_radius + max(0.04, 2.0 * aa), rho);
    vec3 sclera = mix(LIMBUS, SCLERA, edge) * (1.0 - 0.25 * smoothstep(0.6, 1.1, rho));
    return mix(iris, sclera, smoothstep(u_iris_radius - aa, u_iris_radius + aa, rho));
}

void main() {
    vec3 n = normalize(v_normal);
    if (n.z < 0.0) {
        n = -n;
    }
    vec3 base = eye_colour(v_local) * lid_light(v_head.xy);
    float diffuse = 0.72 * max(dot(n, KEY), 0.0) + 0.22 * max(dot(n, FILL), 0.0) + 0.18;
    // h^120 = h^64 h^32 h^16 h^8 by squaring (cheaper than pow() on a CPU rasteriser; see skin.frag)
    float h = max(dot(n, HALFWAY), 0.0);
    float h8 = h * h;
    h8 *= h8;
    h8 *= h8;
    float h16 = h8 * h8;
    float h32 = h16 * h16;
    float specular = 0.45 * h32 * h32 * h32 * h16 * h8;
    f_colour = vec4((base * diffuse + vec3(specular)) * u_dim, 1.0);
}
