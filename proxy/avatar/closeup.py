"""The eye close-up: the same avatar, framed on both eyes, for the doctor's second video.

At 640x480 each eye of the avatar is some 30-40 pixels wide, too small to judge a
lid margin, a small squint or a fine nystagmus. :class:`EyeCloseupRenderer` draws
the same head, eyes and lids from the same :class:`~proxy.params.MaskParams` (and
through the same calibration) as :class:`~proxy.avatar.renderer.AvatarRenderer`,
with only the camera changed: the midpoint of the outer eye corners is placed at
the picture's centre and the corners span :data:`FILL` of its width, whatever the
face's place and size in the camera picture. With ``stabilize`` (the default)
the head's rotation is left out as well, so the eyes stay centred and level and
what moves is the eyes in the head (the gaze the parameters measure) and the lids.

Like the face view it has no path from camera pixels: the framing is computed
from the template head, and a frame without a face is the neutral avatar,
dimmed, with the "searching" spinner.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from proxy.avatar.renderer import OUTER_CORNERS, AvatarRenderer, head_rotation
from proxy.params import MaskParams

#: The close-up's default size: both eyes side by side at three times the width of the height.
CLOSEUP_SIZE = (960, 320)
#: Share of the picture's width between the outer eye corners.
FILL = 0.85
#: The framing's centre above the eye corners' line, in eye-corner distances (shows more lid and brow
#: than cheek).
RAISE = 0.03


class EyeCloseupRenderer(AvatarRenderer):
    """An :class:`AvatarRenderer` whose camera frames both eyes (``render(params)`` as for the face view)."""

    def __init__(self, width: int = CLOSEUP_SIZE[0], height: int = CLOSEUP_SIZE[1], *, stabilize: bool = True,
                 fill: float = FILL, **kwargs: object) -> None:
        if not 0.1 <= fill <= 1.0:
            raise ValueError(f"fill must be between 0.1 and 1, not {fill}")
        # weak perspective: a pinhole camera close enough to frame the eyes would distort them
        super().__init__(width, height, **{"perspective": False, **kwargs})  # type: ignore[arg-type]
        self.stabilize = stabilize
        self.fill = fill
        corners = self.template.vertices[list(OUTER_CORNERS)].astype(float)
        self._corner_width = float(np.linalg.norm(corners[1] - corners[0]))
        self._centre = corners.mean(axis=0) + np.array([0.0, RAISE * self._corner_width, 0.0])

    def framed(self, params: MaskParams) -> MaskParams:
        """``params`` (as drawn) with the head placed and sized for the close-up, its rotation removed if stabilized.

        The renderer draws the template origin at (``head_x`` x width, ``head_y`` x height) with
        ``head_scale`` x height pixels between the outer eye corners; this solves those three for the
        eye-corner midpoint at the centre and the corners ``fill`` x width apart.
        """
        if self.stabilize:
            params = dataclasses.replace(params, head_yaw=0.0, head_pitch=0.0, head_roll=0.0)
        rotation = head_rotation(params.head_yaw, params.head_pitch, params.head_roll)
        pixels_per_cm = self.fill * self.width / self._corner_width
        centre = rotation @ self._centre
        origin_x = self.width / 2 - pixels_per_cm * centre[0]
        origin_y = self.height / 2 + pixels_per_cm * centre[1]
        return dataclasses.replace(params, head_x=float(origin_x / self.width), head_y=float(origin_y / self.height),
                                   head_scale=float(self.fill * self.width / self.height))

    def render_into(self, params: MaskParams, out: np.ndarray) -> np.ndarray:
        """As the face view, with the calibration of a head at the neutral place and size (and, stabilized, pose).

        The calibration makes our tracker read the face view back as measured, and corrects the drawn eyes by
        the head's pose and size. Taken from the patient's place, size or pose and then drawn framed (and
        frontal), those corrections would show as eye movements the patient did not make.
        """
        neutral = MaskParams()
        params = dataclasses.replace(params, head_x=neutral.head_x, head_y=neutral.head_y,
                                     head_scale=neutral.head_scale)
        if self.stabilize:
            params = dataclasses.replace(params, head_yaw=0.0, head_pitch=0.0, head_roll=0.0)
        return super().render_into(params, out)

    def _draw(self, params: MaskParams, searching: bool) -> None:
        super()._draw(self.framed(params), searching)
