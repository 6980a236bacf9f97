"""The avatar's lid response: the aperture our tracker reads on the avatar for each drawn opening.

``python -m proxy.avatar.response`` prints it; the table it checks is ``APERTURE_DRAWN`` /
``APERTURE_MEASURED`` in :mod:`proxy.avatar.mesh`.
"""

from __future__ import annotations

import numpy as np

from proxy.avatar.mesh import APERTURE_DRAWN, APERTURE_MEASURED
from proxy.avatar.renderer import AvatarRenderer
from proxy.avatar.retarget import Retargeter
from proxy.params import MaskParams
from proxy.tracking.tracker import FaceTracker


def aperture_response(drawn: tuple[float, ...] = APERTURE_DRAWN) -> list[tuple[float, float]]:
    """(drawn opening, aperture our tracker measures on the avatar), averaged over poses and eyes."""

    tracker, retarget = FaceTracker(smoothing=False), Retargeter()
    result = []
    with AvatarRenderer(640, 480) as renderer:
        for opening in drawn:
            # the drawn opening is what drawn_lids returns for an aperture measured as APERTURE_DRAWN
            aperture = float(np.interp(opening, APERTURE_DRAWN, APERTURE_MEASURED))
            values = []
            for yaw, pitch in ((0, 0), (15, 0), (-15, 5)):
                params = MaskParams(face=True, head_yaw=yaw, head_pitch=pitch, right_upper_lid=0.6 * opening,
                                    left_upper_lid=0.6 * opening, right_lower_lid=0.4 * opening,
                                    left_lower_lid=0.4 * opening, right_aperture=aperture, left_aperture=aperture)
                tracker.reset()
                measured = retarget(tracker.process(renderer.render(params)), 640, 480)
                values += [measured.right_aperture, measured.left_aperture]
            result.append((opening, round(float(np.mean(values)), 3)))
    return result


if __name__ == "__main__":
    for drawn_opening, measured_aperture in aperture_response():
        print(f"drawn {drawn_opening:.3f} -> measured {measured_aperture:.3f}")
