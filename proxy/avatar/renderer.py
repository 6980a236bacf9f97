"""Avatar renderer: :class:`~proxy.params.MaskParams` in, an identity-free face picture out.

The doctor sees the template head (the same for every patient) posed by the
patient's head pose, with two eyeballs that rotate on their own and lids,
brows and lips placed where the parameters say. The renderer's only input is
``MaskParams``: there is no path from camera pixels to its output, and the
same parameters always give the same bytes.

It is the inverse of :class:`~proxy.avatar.retarget.Retargeter`, geometry first: the
camera is the nominal pinhole camera the retargeter assumes (:mod:`.camera`), the
template origin shows at (``head_x`` x width, ``head_y`` x height) at the distance
where the outer eye corners are ``head_scale`` x height apart, the head pose is the
pose seen along the line of sight to the head (as the retargeter's fit reports it),
and each eyeball's optical (pupillary) axis is drawn angle kappa temporal of the
line of sight the gaze gives. What the tracker still reads differently is taken out
by the avatar's :class:`~proxy.avatar.calibration.Calibration`, through which eye
rotations, lids and head pose are drawn, so tracking the rendered avatar measures
the same parameters back (``tests/avatar/test_calibration.py`` checks this round trip).

One headless OpenGL context (EGL) per renderer, an offscreen framebuffer, and
the picture read back into a caller's numpy array: no window, no globals.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Callable
from functools import lru_cache
from types import TracebackType

import moderngl
import numpy as np

from proxy.avatar.body import UpperBody, body_angles
from proxy.avatar.calibration import Calibration, load_calibration
from proxy.avatar.camera import Camera, towards
from proxy.avatar.mesh import (
    EYEBALL_RADIUS_CM,
    IRIS_RADIUS_CM,
    PUPIL_RADIUS_CM,
    AvatarMesh,
    eyeball_centres,
    sphere,
)
from proxy.avatar.retarget import KAPPA_DEG
from proxy.avatar.template import Template, load_template
from proxy.params import MaskParams
from proxy.resources import SHADERS

#: Background: a calm blue-grey, constant whatever the input.
BACKGROUND = (0.42, 0.46, 0.50)
#: Brightness while no face is tracked (the neutral avatar with a spinner).
SEARCHING_DIM = 0.8
#: Clip depth per cm (the head and the upper body fit well inside +-1).
DEPTH_PER_CM = 1.0 / 60.0
#: Distance between the template's outer eye corners (vertices 33 and 263), cm.
OUTER_CORNERS = (33, 263)
#: Multisampling (0 = off). Off by default: on Mesa llvmpipe 4x MSAA costs about 6 ms per
#: 640x480 frame (8.4 ms instead of 2.1 ms) and the tracker round trip does not need it.
SAMPLES = 0
#: Supersampling factor for files (``maskproxy mask``, ``audit``): the avatar is drawn at this
#: many times the output's width and height and box-filtered down. Without it, how the avatar's
#: edges and details alias depends on the face's size in pixels, and that is enough for a face
#: recogniser to tell photos of one source (one camera, one resolution) from another's: the
#: audit's mask-to-mask linkage falls from 0.154 to 0.121 (mean over reference choices) with 4.
#: Live consults use 1 (16 times the fill cost does not fit a CPU frame budget).
OFFLINE_SUPERSAMPLE = 4
#: The supersampled picture's longest side stays within this (a 1920x1080 file is drawn at 2x).
MAX_SUPERSAMPLED_SIDE = 4096


def head_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(-pitch) for angles in degrees (the params' convention)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    rz = np.array([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[math.cos(y), 0.0, math.sin(y)], [0.0, 1.0, 0.0], [-math.sin(y), 0.0, math.cos(y)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(p), math.sin(p)], [0.0, -math.sin(p), math.cos(p)]])
    return rz @ ry @ rx


def eye_rotation(yaw: float, pitch: float) -> np.ndarray:
    """Eyeball rotation Ry(yaw) Rx(-pitch): its optical axis (+z) turns to the gaze direction."""
    return head_rotation(yaw, pitch, 0.0)


def _mat3(matrix: np.ndarray) -> bytes:
    """Column-major float32 bytes of a 3x3 matrix, as GLSL's mat3 expects."""
    return np.ascontiguousarray(matrix.T, dtype=np.float32).tobytes()


@lru_cache(maxsize=1)
def _gl_finish() -> Callable[[], None] | None:
    """glFinish through ctypes, which releases Python's GIL while it waits.

    moderngl holds the GIL in ``read_into`` while the rasteriser (llvmpipe's threads, or the
    GPU) finishes the frame: milliseconds in which no other consult's Python code can run.
    Waiting here first, without the GIL, leaves ``read_into`` only the copy.
    """
    for name in ("libOpenGL.so.0", "libGL.so.1"):
        try:
            return ctypes.CDLL(name).glFinish
        except (OSError, AttributeError):
            continue
    return None


def rasterise_inline() -> None:
    """Have Mesa's llvmpipe rasterise in the thread that draws, unless the operator set ``LP_NUM_THREADS``.

    llvmpipe's own rasteriser threads shorten one picture on idle cores, but hand-offs between them
    cost CPU; a proxy whose cores are busy with other consults carries more consults without them
    (on one core, a 640x480 frame's CPU time, all threads, was 4.1 ms against 4.5 ms, means of three
    alternating runs of ``python -m proxy.avatar.renderer`` under ``taskset -c 0``). Files keep the
    threads (one picture at a time, supersampled). Takes effect for GL contexts created after it, so
    servers call it first.
    """
    os.environ.setdefault("LP_NUM_THREADS", "0")


def _read_shader(name: str) -> str:
    return (SHADERS / name).read_text()


def create_context(backend: str | None = None) -> moderngl.Context:
    """A headless OpenGL 3.3 context; ``None`` means EGL (Mesa llvmpipe or a GPU's driver)."""
    backend = backend or "egl"
    try:
        return moderngl.create_context(standalone=True, backend=backend, require=330)
    except Exception as exc:  # noqa: BLE001 - moderngl raises plain Exception
        raise RuntimeError(
            f"cannot create a headless OpenGL 3.3 context (backend={backend!r}): {exc}. "
            "Install an EGL driver (e.g. Debian's libegl1 + libgl1-mesa-dri for CPU rendering, "
            "or the NVIDIA driver), or pass another moderngl backend name."
        ) from exc


class AvatarRenderer:
    """Draws the avatar for one video stream at the stream's frame size.

    ``render(params)`` returns a new HxWx3 uint8 RGB frame (top row first);
    ``render_into(params, out)`` fills a caller's array without allocating, HxWx3 RGB or
    HxWx4 RGBA: Mesa reads four channels back as a copy and three through a conversion
    (0.03 against 0.32 ms at 640x480 on one core: ``scripts/readback_cost.py``), so the live
    path, which converts to I420 anyway, takes RGBA.
    Call ``close()`` (or use it as a context manager) to release the GL context.

    ``calibration`` maps the parameters to what is drawn (eyeball rotations, lid heights, head
    pose); the default is the shipped one (:func:`~proxy.avatar.calibration.load_calibration`),
    fitted so that our tracker reads the avatar back as the parameters say.
    ``Calibration.identity()`` draws the angles and openings as they are.

    ``supersample`` k draws at k times the output's width and height and averages each k x k
    block (see :data:`OFFLINE_SUPERSAMPLE`); it is lowered for large frames so that the drawn
    picture stays within :data:`MAX_SUPERSAMPLED_SIDE`. 1 draws at the output's size.

    ``perspective`` (the default) draws through the nominal pinhole camera of the picture's size,
    as the retargeter reads it; ``False`` draws in weak perspective (the eye close-up's framing).

    ``cull`` (the default) skips the back faces of the closed surfaces (the skin that never moves, the
    body, the eyeballs), which are never seen: the same picture, drawn faster. ``False`` draws every triangle.
    """

    def __init__(self, width: int, height: int, backend: str | None = None,
                 template: Template | None = None, samples: int = SAMPLES,
                 calibration: Calibration | None = None, supersample: int = 1, perspective: bool = True,
                 cull: bool = True) -> None:
        if supersample < 1:
            raise ValueError(f"supersample must be at least 1, not {supersample}")
        self.supersample = int(supersample)
        self.perspective = perspective
        self.cull = cull
        self.template = template or load_template()
        self.calibration = calibration if calibration is not None else load_calibration()
        self.mesh = AvatarMesh(self.template)
        self.ctx = create_context(backend)
        self.samples = min(samples, self.ctx.max_samples) if samples else 0
        self._closed = False
        ctx = self.ctx
        # one program per material: skin (head, upper body) and the procedural eyeball
        self.skin = ctx.program(vertex_shader=_read_shader("avatar.vert"),
                                fragment_shader=_read_shader("skin.frag"))
        self.eye = ctx.program(vertex_shader=_read_shader("avatar.vert"),
                               fragment_shader=_read_shader("eye.frag"))
        self.overlay = ctx.program(vertex_shader=_read_shader("overlay.vert"),
                                   fragment_shader=_read_shader("overlay.frag"))
        self.downsample = ctx.program(vertex_shader=_read_shader("fullscreen.vert"),
                                      fragment_shader=_read_shader("downsample.frag"))
        mesh = self.mesh
        positions, normals = mesh.deform(MaskParams.neutral())
        self._dynamic = np.empty((len(positions), 6), dtype=np.float32)
        self._dynamic[:, :3], self._dynamic[:, 3:] = positions, normals
        self._head_vbo = ctx.buffer(self._dynamic.tobytes(), dynamic=True)
        self._head_colours = ctx.buffer(mesh.colours.tobytes())
        self._head_ibo = ctx.buffer(mesh.triangles.astype(np.int32).tobytes())
        self._head_vao = ctx.vertex_array(
            self.skin,
            [(self._head_vbo, "3f 3f", "in_position", "in_normal"), (self._head_colours, "3f", "in_colour")],
            self._head_ibo,
        )
        self._static = []
        # the upper body: posed on the CPU each frame (it follows the head's pose in part)
        self.body = UpperBody()
        self._body_dynamic = np.empty((len(self.body.rest), 6), dtype=np.float32)
        self._body_vbo = ctx.buffer(reserve=self._body_dynamic.nbytes, dynamic=True)
        self._body_colours = ctx.buffer(self.body.colours.tobytes())
        self._body_ibo = ctx.buffer(self.body.triangles.tobytes())
        self._static += [self._body_vbo, self._body_colours, self._body_ibo]
        self._body_vao = ctx.vertex_array(
            self.skin,
            [(self._body_vbo, "3f 3f", "in_position", "in_normal"), (self._body_colours, "3f", "in_colour")],
            self._body_ibo,
        )
        self._eye_centres = eyeball_centres(self.template)
        self._eye_frames = [(tuple(float(c) for c in corner), tuple(float(c) for c in axis), float(width))
                            for corner, axis, width in (self.mesh.eye_frame(i) for i in (0, 1))]
        eye_v, eye_t = sphere(EYEBALL_RADIUS_CM)
        eye_n = eye_v / EYEBALL_RADIUS_CM
        self._eye_vao = self._static_vao(self.eye, eye_v, eye_n, None, eye_t)
        quad = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], dtype=np.float32)
        self._quad = ctx.buffer(quad.tobytes())
        self._static.append(self._quad)
        self._overlay_vao = ctx.vertex_array(self.overlay, [(self._quad, "2f", "in_corner")])
        self._downsample_vao = ctx.vertex_array(self.downsample, [(self._quad, "2f", "in_corner")])
        self.eye["u_eye_radius"].value = EYEBALL_RADIUS_CM
        self.eye["u_iris_radius"].value = IRIS_RADIUS_CM
        self.eye["u_pupil_radius"].value = PUPIL_RADIUS_CM
        for program in (self.skin, self.eye):
            program["u_depth"].value = DEPTH_PER_CM
        corners = self.template.vertices[list(OUTER_CORNERS)]
        self._corner_cm = float(np.linalg.norm(corners[1] - corners[0]))
        self.width = self.height = 0
        self.factor = 1  #: the supersampling factor in use at the current size
        self._targets: list[moderngl.Framebuffer | moderngl.Renderbuffer] = []
        self.resize(width, height)

    # ---- lifetime -----------------------------------------------------------------------

    def _static_vao(self, program: moderngl.Program, vertices: np.ndarray, normals: np.ndarray,
                    colours: np.ndarray | None, triangles: np.ndarray) -> moderngl.VertexArray:
        """A static mesh; ``colours`` None for a shader that paints its own (the eyeball)."""
        columns, layout, names = [vertices, normals], "3f 3f", ["in_position", "in_normal"]
        if colours is not None:
            columns.append(colours)
            layout, names = layout + " 3f", [*names, "in_colour"]
        vbo = self.ctx.buffer(np.hstack(columns).astype(np.float32).tobytes())
        ibo = self.ctx.buffer(triangles.astype(np.int32).tobytes())
        self._static += [vbo, ibo]
        return self.ctx.vertex_array(program, [(vbo, layout, *names)], ibo)

    def resize(self, width: int, height: int) -> None:
        """Change the output size (the input video's size may change mid-stream)."""
        if width < 1 or height < 1:
            raise ValueError(f"bad frame size {width}x{height}")
        if (width, height) == (self.width, self.height):
            return
        with self.ctx:
            self._make_targets(width, height)

    def _make_targets(self, width: int, height: int) -> None:
        self._release_targets()
        ctx = self.ctx
        self.width, self.height = width, height
        self.factor = max(1, min(self.supersample, MAX_SUPERSAMPLED_SIDE // max(width, height)))
        draw_w, draw_h = self._draw_size
        colour = ctx.renderbuffer((width, height), 4)
        if self.factor > 1:
            # draw into a texture k times larger; _resolve() box-filters it into self.fbo
            self.fbo = ctx.framebuffer([colour])
            self._big = ctx.texture((draw_w, draw_h), 4)
            big_depth = ctx.depth_renderbuffer((draw_w, draw_h))
            self.big_fbo = ctx.framebuffer([self._big], big_depth)
            self._targets = [self.fbo, colour, self.big_fbo, self._big, big_depth]
        else:
            depth = ctx.depth_renderbuffer((width, height))
            self.fbo = self.big_fbo = ctx.framebuffer([colour], depth)
            self._targets = [self.fbo, colour, depth]
        self.draw_fbo = self.big_fbo
        if self.samples:
            ms_colour = ctx.renderbuffer((draw_w, draw_h), 4, samples=self.samples)
            ms_depth = ctx.depth_renderbuffer((draw_w, draw_h), samples=self.samples)
            self.draw_fbo = ctx.framebuffer([ms_colour], ms_depth)
            self._targets += [self.draw_fbo, ms_colour, ms_depth]

    @property
    def _draw_size(self) -> tuple[int, int]:
        """The size the avatar is drawn at: the output's, times the supersampling factor."""
        return self.width * self.factor, self.height * self.factor

    def _release_targets(self) -> None:
        for target in self._targets:
            target.release()
        self._targets = []

    def close(self) -> None:
        """Release every GL object and the context; the renderer is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        with self.ctx:
            self._release_targets()
            for vao in (self._head_vao, self._body_vao, self._eye_vao, self._overlay_vao, self._downsample_vao):
                vao.release()
            for buffer in [self._head_vbo, self._head_colours, self._head_ibo, *self._static]:
                buffer.release()
            for program in (self.skin, self.eye, self.overlay, self.downsample):
                program.release()
        self.ctx.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> AvatarRenderer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- drawing ------------------------------------------------------------------------

    def render(self, params: MaskParams) -> np.ndarray:
        """A new HxWx3 uint8 RGB frame (top row first) showing ``params``."""
        out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        return self.render_into(params, out)

    def render_into(self, params: MaskParams, out: np.ndarray) -> np.ndarray:
        """Render into ``out`` (C-contiguous uint8, the renderer's size: HxWx3 RGB or HxWx4 RGBA) and return it."""
        if self._closed:
            raise RuntimeError("renderer is closed")
        if (out.shape not in ((self.height, self.width, 3), (self.height, self.width, 4)) or out.dtype != np.uint8
                or not out.flags.c_contiguous):
            raise ValueError(f"out must be a C-contiguous {self.height}x{self.width}x3 or x4 uint8 array")
        searching = not params.face
        if searching:
            params = MaskParams.neutral(params.frame, params.t)
        params.check()
        drawn = self.calibration.drawn(params)
        with self.ctx:  # make this renderer's context current (several may share a thread)
            self._draw(drawn, searching)
            if self.samples:
                self.ctx.copy_framebuffer(self.big_fbo, self.draw_fbo)
            if self.factor > 1:
                self._resolve()
            finish = _gl_finish()
            if finish is not None:
                finish()
            self.fbo.read_into(out, components=out.shape[2], alignment=1)
        return out

    def _draw(self, params: MaskParams, searching: bool) -> None:
        """Draw calibrated (drawn) parameters into ``draw_fbo``."""
        ctx, skin, eye = self.ctx, self.skin, self.eye
        positions, normals = self.mesh.deform(params)
        self._dynamic[:, :3], self._dynamic[:, 3:] = positions, normals
        self._head_vbo.write(self._dynamic)

        width, height = self._draw_size
        self.draw_fbo.use()
        ctx.viewport = (0, 0, width, height)
        ctx.enable_only(moderngl.DEPTH_TEST)
        ctx.clear(*BACKGROUND, 1.0, depth=1.0)
        rotation = head_rotation(params.head_yaw, params.head_pitch, params.head_roll)
        turn = np.eye(3)
        k = self.factor
        # pixel centres sit at integers in the output; a drawn pixel is 1/k of an output pixel
        half = 0.5 * (k - 1)
        pixels_per_cm = float(params.head_scale) * self.height / self._corner_cm  # output pixels
        focal, centre, position = 0.0, (0.0, 0.0), (0.0, 0.0, -1.0)
        if self.perspective:
            camera = Camera.nominal(self.width, self.height)
            place = camera.place(float(params.head_x) * self.width, float(params.head_y) * self.height,
                                 pixels_per_cm)
            # the pose is as seen along the line of sight to the head: turn it into the camera's frame
            turn = towards(-place)
            focal, centre = camera.focal * k, (camera.cx * k + half, camera.cy * k + half)
            position = tuple(float(c) for c in place)
        head = _mat3(turn @ rotation)
        origin = (float(params.head_x) * self.width * k + half, float(params.head_y) * self.height * k + half)
        for program in (skin, eye):
            program["u_head"].write(head)
            program["u_scale"].value = pixels_per_cm * k
            program["u_origin"].value = origin
            program["u_focal"].value = focal
            program["u_centre"].value = centre
            program["u_position"].value = position
            program["u_size"].value = (float(width), float(height))
            program["u_dim"].value = SEARCHING_DIM if searching else 1.0
        skin["u_local"].write(_mat3(np.eye(3)))
        skin["u_offset"].value = (0.0, 0.0, 0.0)
        # Skin that moves can fold over, and the openings' linings and the lash lines are seen from either side:
        # they are drawn two-sided. Everything else is a closed surface whose far side is never seen: the skin that
        # never moves, the body and the eyeballs are culled (llvmpipe then neither shades nor depth-tests their far
        # sides: the same picture, drawn faster). Their outside faces are counter-clockwise in the head frame,
        # clockwise on screen (rows run downwards).
        still = 3 * self.mesh.cullable_triangles
        self._head_vao.render(moderngl.TRIANGLES, vertices=3 * len(self.mesh.triangles) - still, first=still)
        if self.cull:
            ctx.enable(moderngl.CULL_FACE)
        ctx.front_face = "cw"
        self._head_vao.render(moderngl.TRIANGLES, vertices=still)
        body = head_rotation(*body_angles(params.head_yaw, params.head_pitch, params.head_roll))
        self._body_dynamic[:, :3], self._body_dynamic[:, 3:] = self.body.pose(turn @ rotation, turn @ body)
        self._body_vbo.write(self._body_dynamic)
        skin["u_head"].write(_mat3(np.eye(3)))  # posed in the head's camera frame already
        self._body_vao.render(moderngl.TRIANGLES)
        margins = self.mesh.lid_margins(params)
        # each eyeball's optical axis lies kappa temporal of its line of sight (the gaze)
        for centre, (yaw, pitch), nasal, frame, margin in zip(
                self._eye_centres, ((params.right_gaze_yaw, params.right_gaze_pitch),
                                    (params.left_gaze_yaw, params.left_gaze_pitch)), (1.0, -1.0),
                self._eye_frames, margins, strict=True):
            eye["u_local"].write(_mat3(eye_rotation(float(yaw) - nasal * KAPPA_DEG, float(pitch))))
            eye["u_offset"].value = tuple(float(c) for c in centre)
            eye["u_lid_corner"].value, eye["u_lid_axis"].value, eye["u_lid_width"].value = frame
            eye["u_lid_margins"].value = margin
            self._eye_vao.render(moderngl.TRIANGLES)
        ctx.front_face = "ccw"
        ctx.disable(moderngl.CULL_FACE)
        if searching:
            self._draw_spinner(params.t)

    def _draw_spinner(self, t: float) -> None:
        ctx, overlay = self.ctx, self.overlay
        ctx.enable_only(moderngl.BLEND)
        ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        width, height = self._draw_size
        radius = max(6.0, 0.03 * min(self.width, self.height)) * self.factor
        overlay["u_centre"].value = (width - 2.0 * radius, 2.0 * radius)
        overlay["u_radius"].value = radius
        overlay["u_size"].value = (float(width), float(height))
        overlay["u_phase"].value = float(t) % 1.0
        self._overlay_vao.render(moderngl.TRIANGLE_STRIP)

    def _resolve(self) -> None:
        """Box-filter the supersampled picture into the output framebuffer."""
        ctx = self.ctx
        self.fbo.use()
        ctx.viewport = (0, 0, self.width, self.height)
        ctx.disable(moderngl.DEPTH_TEST | moderngl.BLEND)
        self._big.use(location=0)
        self.downsample["u_source"].value = 0
        self.downsample["u_factor"].value = self.factor
        self._downsample_vao.render(moderngl.TRIANGLE_STRIP)


def benchmark(width: int = 640, height: int = 480, frames: int = 200, supersample: int = 1) -> float:
    """Mean milliseconds per ``render_into`` over a moving sequence (``python -m proxy.avatar.renderer``)."""
    import time

    with AvatarRenderer(width, height, supersample=supersample) as renderer:
        out = np.empty((height, width, 3), dtype=np.uint8)
        sequence = [MaskParams(face=True, head_yaw=15 * math.sin(i / 10), head_roll=5 * math.sin(i / 7),
                               right_gaze_yaw=15 * math.sin(i / 3), left_gaze_yaw=10 * math.sin(i / 4),
                               right_upper_lid=0.2 + 0.1 * math.sin(i / 5), mouth_open=0.1 + 0.1 * math.sin(i / 9))
                    for i in range(frames)]
        for params in sequence[:20]:
            renderer.render_into(params, out)
        start = time.perf_counter()
        for params in sequence:
            renderer.render_into(params, out)
        return (time.perf_counter() - start) / frames * 1000.0


if __name__ == "__main__":
    print(f"{benchmark():.2f} ms per 640x480 frame")
