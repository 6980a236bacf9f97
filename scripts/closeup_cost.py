"""What the doctor's eye close-up costs (issue 16): per-frame CPU time, and a live consult with it on one core.

``python scripts/closeup_cost.py`` times, on the CPU it runs on (run it under ``taskset -c 0``), each frame's
extra work for the close-up (drawing the 960x320 close-up, I420 conversion, VP8 encoding) beside the same steps
for the 640x480 face view, over a moving parameter sequence.

``python scripts/closeup_cost.py --live CLIP`` runs a real ``maskproxy serve`` pinned to CPU 0 and, through it,
a consult whose doctor does not ask for the close-up, then one whose doctor does (aiortc clients on CPU 1, the
clip as the camera at 30 fps). Per consult it prints the frame rates the doctor receives, the masked frame rate,
and the proxy's CPU time per masked frame (from /proc): below 33 ms, one core keeps up with 30 fps whatever
else the machine is doing meanwhile (a loaded machine lowers the frame rates, not the CPU per frame much).
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

    return [MaskParams(face=True, t=i / 30, frame=i, head_yaw=10 * math.sin(i / 20),
                       head_x=0.5 + 0.03 * math.sin(i / 15),
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far (s)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _consult(base: str, key: str, pid: int, frames: list, closeup: bool, seconds: float) -> dict[str, object]:
    import aiohttp

    from proxy.consult.client import ConsultClient

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/rooms", headers={"Authorization": f"Bearer {key}"}) as response:
            room = await response.json()
        headers = {"Authorization": f"Bearer {room['doctor_token']}"}

        async def state() -> dict:
            async with session.get(f"{base}/api/rooms/{room['room']}", headers=headers) as response:
                return await response.json()

        doctor = ConsultClient(base, room["room"], room["doctor_token"], "doctor", closeup=closeup)
        patient = ConsultClient(base, room["room"], room["patient_token"], "patient", frames=frames)
        await doctor.connect(session)
        await patient.connect(session)
        await asyncio.sleep(5.0)  # connected and warmed up
        counts = {name: r.count for name, r in doctor.receivers.items()}
        before, cpu = await state(), _cpu_seconds(pid)
        await asyncio.sleep(seconds)
        after, cpu = await state(), _cpu_seconds(pid) - cpu
        received = {name: round((r.count - counts.get(name, 0)) / seconds, 1)
                    for name, r in doctor.receivers.items() if name != "audio"}
        masked = after["mask"]["masked"] - before["mask"]["masked"]
        await patient.close()
        await doctor.close()
        async with session.delete(f"{base}/api/rooms/{room['room']}",
                                  headers={"Authorization": f"Bearer {key}"}):
            pass
    return {"closeup": closeup, "doctor_fps": received, "masked_fps": round(masked / seconds, 1),
            "proxy_cpu_ms_per_masked_frame": round(1000 * cpu / max(masked, 1), 1),
            "proxy_cpu_share": round(cpu / seconds, 2), "dropped": after["mask"]["dropped"] - before["mask"]["dropped"],
            "latency_ms": after["mask"]["latency_ms"], "closeup_state": after["exam"]["closeup"]}


async def live(clip: Path, seconds: float) -> list[dict[str, object]]:
    """A consult without the close-up, then one with it, through a ``maskproxy serve`` pinned to CPU 0."""
    from proxy.bench.live import clip_frames, serving

    frames = clip_frames(clip, (640, 480))
    args = argparse.Namespace(server_cpus="0", threads=1, consults=1)
    with serving(args) as (server, base, key):
        os.sched_setaffinity(0, {1})
        return [await _consult(base, key, server.pid, frames, closeup, seconds) for closeup in (False, True)]


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
