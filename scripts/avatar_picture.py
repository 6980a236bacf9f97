"""README's picture of the avatar: ``python scripts/avatar_picture.py [docs/avatar.png]``.

The neutral avatar with a slight gaze, drawn as files get it (640x480, supersampled), framed a little
higher and smaller than a webcam's default so that the shoulders show.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from proxy.avatar.renderer import OFFLINE_SUPERSAMPLE, AvatarRenderer
from proxy.params import MaskParams

#: Neutral, looking slightly to the image's right and down, face and shoulders in the picture.
PICTURE = MaskParams(face=True, head_y=0.36, head_scale=0.22, right_gaze_yaw=8.0, left_gaze_yaw=8.0,
                     right_gaze_pitch=-3.0, left_gaze_pitch=-3.0)


def main(path: Path) -> None:
    with AvatarRenderer(640, 480, supersample=OFFLINE_SUPERSAMPLE) as renderer:
        frame = renderer.render(PICTURE)
    if not cv2.imwrite(str(path), frame[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"cannot write {path}")
    print(path)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/avatar.png"))
