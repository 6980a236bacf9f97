"""The faster audio-level helper gives exactly aiortc's values."""

from __future__ import annotations

import av
import numpy as np

from proxy.consult import aiortc_speedups


def test_audio_level_matches_aiortc() -> None:
    rng = np.random.default_rng(4)
    for amplitude in (0, 1, 30, 1000, 12000, 32767):
        for layout, channels in (("mono", 1), ("stereo", 2)):
            samples = np.clip(rng.normal(0, amplitude, (1, 960 * channels)), -32768, 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
            frame.sample_rate = 48000
            assert aiortc_speedups.compute_audio_level_dbov(frame) == aiortc_speedups.original()(frame)


def test_install_replaces_the_helper_aiortc_calls() -> None:
    from aiortc import rtp

    aiortc_speedups.install()
    assert rtp.compute_audio_level_dbov is aiortc_speedups.compute_audio_level_dbov
