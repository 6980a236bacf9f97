"""What the doctor's eye close-up costs (issue 16): per-frame CPU time, and a live consult with it on one core.

``python scripts/closeup_cost.py`` times, on the CPU it runs on (run it under ``taskset -c 0``), each frame's
extra work for the close-up (drawing the 960x320 close-up, I420 conversion, VP8 encoding) beside the same steps
for the 640x480 face view, over a moving parameter sequence.

``python scripts/closeup_cost.py --live CLIP`` also runs a real ``maskproxy serve`` pinned to CPU 0 with one
consult whose doctor asks for the close-up (aiortc clients pinned to CPU 1, the clip as the camera at 30 fps)
and prints the frame rates the doctor receives on both videos and the proxy's added latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from pathlib import Path


def _sequence(n: int) -> list:
    from proxy.params import MaskParams

    return [MaskParams(face=True, t=i / 30, frame=i, head_yaw=10 * math.sin(i / 20), head_x=0.5 + 0.03 * math.sin(i / 15),
                       right_gaze_yaw=15 * math.sin(i / 9), left_gaze_yaw=15 * math.sin(i / 9),
                       right_gaze_pitch=5 * math.cos(i / 7), left_gaze_pitch=5 * math.cos(i / 7),
                       right_upper_lid=0.2 + 0.05 * math.sin(i / 5)) for i in range(n)]


def per_frame(renderer: object, frames: int = 300) -> dict[str, float]:
    """Mean CPU ms per frame of drawing, I420 conversion and VP8 encoding with ``renderer``."""
    from aiortc.codecs.vpx import Vp8Encoder

    from proxy.avatar.hold import EyeHold
    from proxy.consult.worker import rgb_to_frame

    encoder, hold = Vp8Encoder(), EyeHold()
    sequence = _sequence(frames + 30)
    parts = {"render": 0.0, "i420": 0.0, "vp8": 0.0}
    for i, params in enumerate(sequence):
        c0 = time.process_time()
        rgb = renderer.render(hold(params))  # type: ignore[attr-defined]
        c1 = time.process_time()
        frame = rgb_to_frame(rgb)
        frame.pts = i * 3000
        c2 = time.process_time()
        encoder.encode(frame)
        c3 = time.process_time()
        if i >= 30:  # warmed up
            parts["render"] += c1 - c0
            parts["i420"] += c2 - c1
            parts["vp8"] += c3 - c2
    out = {k: round(v / frames * 1000, 2) for k, v in parts.items()}
    out["total"] = round(sum(out.values()), 2)
    return out


async def live(clip: Path, seconds: float) -> dict[str, object]:
    import aiohttp

    from proxy.bench.live import clip_frames, serving
    from proxy.consult.client import ConsultClient

    frames = clip_frames(clip, (640, 480))
    args = argparse.Namespace(server_cpus="0", threads=1, consults=1)
    with serving(args) as (_server, base, key):
        os.sched_setaffinity(0, {1})
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/api/rooms", headers={"Authorization": f"Bearer {key}"}) as response:
                room = await response.json()
            doctor = ConsultClient(base, room["room"], room["doctor_token"], "doctor", closeup=True)
            patient = ConsultClient(base, room["room"], room["patient_token"], "patient", frames=frames)
            await doctor.connect(session)
            await patient.connect(session)
            await asyncio.sleep(5.0)  # connected and warmed up
            start = {name: r.count for name, r in doctor.receivers.items()}
            await asyncio.sleep(seconds)
            received = {name: round((r.count - start.get(name, 0)) / seconds, 1) for name, r in doctor.receivers.items()}
            async with session.get(f"{base}/api/rooms/{room['room']}",
                                   headers={"Authorization": f"Bearer {room['doctor_token']}"}) as response:
                state = await response.json()
            await patient.close()
            await doctor.close()
    return {"doctor_fps": {k: v for k, v in received.items() if k != "audio"}, "mask": state["mask"],
            "closeup": state["exam"]["closeup"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=Path, metavar="CLIP", help="also run a live consult with the close-up")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.live is None:
        from proxy.avatar.closeup import EyeCloseupRenderer
        from proxy.avatar.renderer import AvatarRenderer

        with AvatarRenderer(640, 480) as face:
            print("face view 640x480, ms per frame:", json.dumps(per_frame(face)))
        with EyeCloseupRenderer() as closeup:
            print("eye close-up 960x320, ms per frame:", json.dumps(per_frame(closeup)))
    else:
        print(json.dumps(asyncio.run(live(args.live, args.seconds)), indent=1))


if __name__ == "__main__":
    main()
