"""Run by test_recorder: record bar frames in real time into a folder until killed, saying what was written.

``python -m tests.recording.killed ROOT RECORDING_ID KEY_HEX``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from proxy.recording.recorder import Recorder, RecorderSettings
from tests.recording.feed import FPS, bar_frame, params_for


def main() -> None:
    root, recording_id, key = Path(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])
    recorder = Recorder(root / recording_id, recording_id, "killed-consult", key,
                        RecorderSettings(min_free_bytes=0, flush_interval=0.2))
    recorder.start()
    start = time.monotonic()
    for index in range(100 * FPS):
        recorder.add_video(bar_frame(index), params_for(index))
        if index % 5 == 0:
            print("written", recorder.status()["written"].get("video.webm", 0), flush=True)
        time.sleep(max(0.0, start + (index + 1) / FPS - time.monotonic()))


if __name__ == "__main__":
    main()
