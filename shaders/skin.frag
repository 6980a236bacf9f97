#version 330
// Skin fragment shader (head, neck, lash lines): Lambert key + fill light and a little
// specular, in camera space (y up, z towards the viewer; the camera is orthographic so the view
// vector is +z). The eyeballs have their own shader (eye.frag): a CPU rasteriser runs both
// sides of a branch, so one shader per material keeps the large skin area cheap.

in vec3 v_normal;
in vec3 v_colour;
in vec3 v_local;

uniform float u_dim;  // 1 = normal, < 1 while searching for a face

out vec4 f_colour;

const vec3 KEY = normalize(vec3(0.0, 0.55, 1.0));
const vec3 FILL = normalize(vec3(0.0, -0.2, 1.0));
const vec3 HALFWAY = normalize(KEY + vec3(0.0, 0.0, 1.0));

void main() {
    vec3 n = normalize(v_normal);
    if (n.z < 0.0) {
        n = -n;  // two-sided: openings' linings are seen from either side
    }
    vec3 base = v_colour;
    float diffuse = 0.72 * max(dot(n, KEY), 0.0) + 0.22 * max(dot(n, FILL), 0.0) + 0.18;
    // h^24 by squaring: llvmpipe evaluates pow() as exp2(24 log2 h), several times the work
    float h = max(dot(n, HALFWAY), 0.0);
    float h3 = h * h * h;
    float h6 = h3 * h3;
    float h12 = h6 * h6;
    float specular = 0.08 * h12 * h12;
    f_colour = vec4((base * diffuse + vec3(specular)) * u_dim, 1.0);
}
