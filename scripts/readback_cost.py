"""What reading the avatar back costs the live worker: a new RGB array per frame against RGBA into one buffer.

``LP_NUM_THREADS=0 taskset -c 0 python scripts/readback_cost.py`` draws the same moving 640x480 avatar both
ways, in alternating batches (the machine's speed drifts), and converts each picture to the encoder's I420
frame as the worker does. It prints the CPU milliseconds per frame of render + read-back + I420 for each way,
the paired difference, and the read-back alone. Both ways give the same I420 frame
(``tests/avatar/test_renderer.py``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from proxy.avatar.renderer import AvatarRenderer
    from proxy.consult.worker import rgb_to_frame
    from proxy.params import MaskParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="batches per way (default 30)")
    parser.add_argument("--frames", type=int, default=50, help="frames per batch (default 50)")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    sequence = [MaskParams(face=True, head_yaw=float(rng.uniform(-15, 15)), head_scale=0.25, head_x=0.5,
                           head_y=0.5, right_gaze_yaw=float(rng.uniform(-10, 10)),
                           left_gaze_yaw=float(rng.uniform(-10, 10))) for _ in range(args.frames)]
    ways = ("RGB, a new array per frame", "RGBA into one buffer")
    times: dict[str, list[float]] = {way: [] for way in ways}
    buffer = np.empty((480, 640, 4), np.uint8)
    with AvatarRenderer(640, 480) as renderer:
        for batch in range(args.batches):
            for way in ways if batch % 2 else ways[::-1]:
                start = time.thread_time()
                for params in sequence:
                    if way == ways[0]:
                        rgb_to_frame(renderer.render(params))
                    else:
                        rgb_to_frame(renderer.render_into(params, buffer))
                times[way].append((time.thread_time() - start) / len(sequence) * 1000)
        readback = {}
        for channels in (3, 4):
            out = np.empty((480, 640, channels), np.uint8)
            with renderer.ctx:
                start = time.perf_counter()
                for _ in range(200):
                    renderer.fbo.read_into(out, components=channels, alignment=1)
                readback[channels] = (time.perf_counter() - start) / 200 * 1000
    for way in ways:
        print(f"{way}: render + read-back + I420 {np.median(times[way]):.3f} ms/frame CPU (median of "
              f"{args.batches} batches)")
    difference = np.array(times[ways[0]]) - np.array(times[ways[1]])
    print(f"paired difference {np.median(difference):.3f} ms/frame, RGBA faster in {int((difference > 0).sum())} "
          f"of {len(difference)} pairs; read-back alone RGB {readback[3]:.3f} ms, RGBA {readback[4]:.3f} ms")


if __name__ == "__main__":
    main()
