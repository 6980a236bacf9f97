#version 330
// Skin fragment shader (head and neck): Lambert key + fill light and a little specular, in
// camera space (y up, z towards the viewer; the camera is orthographic so the view vector
// is +z), and a thin dark lash line along the upper lid margin. The eyeballs have their own
// shader (eye.frag): a CPU rasteriser runs both sides of a branch, so one shader per
// material keeps the large skin area cheap.

in vec3 v_normal;
in vec4 v_colour;  // rgb, lid-margin weight
in vec3 v_local;

uniform float u_dim;         // 1 = normal, < 1 while searching for a face
uniform float u_lash;        // lash darkness on the upper lid margin, 0..1
uniform float u_lash_width;  // fraction of a margin triangle the lash line covers

out vec4 f_colour;

const vec3 KEY = normalize(vec3(0.0, 0.55, 1.0));
const vec3 FILL = normalize(vec3(0.0, -0.2, 1.0));
const vec3 HALFWAY = normalize(KEY + vec3(0.0, 0.0, 1.0));
const vec3 LASH = vec3(0.16, 0.11, 0.09);

void main() {
    vec3 n = normalize(v_normal);
    if (n.z < 0.0) {
        n = -n;  // two-sided: openings' linings are seen from either side
    }
    // lashes: weight peaks on the margin vertices
    float lash = u_lash * smoothstep(1.0 - u_lash_width, 1.0, v_colour.a);
    vec3 base = mix(v_colour.rgb, LASH, lash);
    float diffuse = 0.72 * max(dot(n, KEY), 0.0) + 0.22 * max(dot(n, FILL), 0.0) + 0.18;
    float specular = 0.08 * pow(max(dot(n, HALFWAY), 0.0), 24.0);
    f_colour = vec4((base * diffuse + vec3(specular)) * u_dim, 1.0);
}
