"""``maskproxy mask``: nothing of the input's pixels reaches the output, and the signals survive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from proxy.avatar.renderer import OFFLINE_SUPERSAMPLE, AvatarRenderer
from proxy.params import MaskParams
from proxy.pipeline import MaskPipeline
from proxy.tracking.blinks import count_blinks
from proxy.tracking.tracker import MESH_SIZE, OFFLINE_EYE_SAMPLES


def maskproxy(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=timeout)


def test_output_is_the_render_of_the_parameters(face_photo: np.ndarray) -> None:
    """The output buffer is exactly what the renderer draws from the parameters: no other path."""
    with MaskPipeline() as pipeline:
        params, out = pipeline.process(face_photo, 0.0, 0)
    assert params.face
    height, width = face_photo.shape[:2]
    with AvatarRenderer(width, height) as renderer:
        assert np.array_equal(out, renderer.render(params))


def test_pixels_outside_the_tracked_regions_cannot_reach_the_output(face_photo: np.ndarray) -> None:
    """Same history, frames differing only outside the crops the models see: identical output."""
    frame = cv2.resize(face_photo, (640, int(640 * face_photo.shape[0] / face_photo.shape[1])))
    with MaskPipeline() as pipeline:
        pipeline.process(frame, 0.0, 0)
        roi = pipeline.tracker._roi
    assert roi is not None
    # everything farther from the face centre than the (rotated) crop's corners is replaced by noise
    ys, xs = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    outside = np.hypot(xs - roi.cx, ys - roi.cy) > roi.size * 0.75 + 2
    assert outside.mean() > 0.1
    other = frame.copy()
    other[outside] = np.random.default_rng(1).integers(0, 255, (int(outside.sum()), 3), dtype=np.uint8)
    outputs = []
    for second in (frame, other):
        with MaskPipeline() as pipeline:
            pipeline.process(frame, 0.0, 0)
            params, out = pipeline.process(second, 1 / 30, 1)
        outputs.append((params.to_json(), out))
    assert outputs[0][0] == outputs[1][0]
    assert np.array_equal(outputs[0][1], outputs[1][1])
    assert MESH_SIZE == 192


def test_a_masked_photo_is_the_supersampled_render_of_its_parameters(tmp_path: Path, face_photo: np.ndarray) -> None:
    """Files are drawn supersampled (``--supersample``, default OFFLINE_SUPERSAMPLE); 1 is the live picture."""
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), face_photo[:, :, ::-1])
    rgb = cv2.imread(str(photo))[:, :, ::-1].copy()
    height, width = rgb.shape[:2]
    with MaskPipeline(eye_samples=OFFLINE_EYE_SAMPLES) as pipeline:
        params = pipeline.track(rgb, 0.0, 0)
    assert params.face
    for flags, supersample in (((), OFFLINE_SUPERSAMPLE), (("--supersample", "1"), 1)):
        target = tmp_path / f"out{supersample}.png"
        done = maskproxy("mask", str(photo), str(target), *flags)
        assert done.returncode == 0, done.stderr
        with AvatarRenderer(width, height, supersample=supersample) as renderer:
            assert np.array_equal(cv2.imread(str(target))[:, :, ::-1], renderer.render(params))
    done = maskproxy("mask", str(photo), str(tmp_path / "bad.png"), "--supersample", "0")
    assert done.returncode == 2 and "--supersample: must be at least 1" in done.stderr
    assert not (tmp_path / "bad.png").exists()


def test_no_face_gives_the_neutral_avatar(tmp_path: Path) -> None:
    photo = tmp_path / "wall.png"
    cv2.imwrite(str(photo), np.full((240, 320, 3), 180, np.uint8))
    done = maskproxy("mask", str(photo), str(tmp_path / "out.png"), "--params-out", str(tmp_path / "p.jsonl"))
    assert done.returncode == 0, done.stderr
    out = cv2.imread(str(tmp_path / "out.png"))[:, :, ::-1]
    with AvatarRenderer(320, 240, supersample=OFFLINE_SUPERSAMPLE) as renderer:
        assert np.array_equal(out, renderer.render(MaskParams.neutral()))
    assert json.loads((tmp_path / "p.jsonl").read_text())["face"] is False


def test_video_face_lost_mid_video(tmp_path: Path, face_photo: np.ndarray) -> None:
    """Face, then an empty scene, then the face again: same frame count and timestamps, no input pixels."""
    source = tmp_path / "in.mp4"
    frame = cv2.resize(face_photo, (320, 240))
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(30):
            image = frame if i < 10 or i >= 20 else np.full_like(frame, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    target = tmp_path / "out.webm"
    done = maskproxy("mask", str(source), str(target), "--params-out", str(tmp_path / "p.jsonl"))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["face"] for r in rows] == [True] * 10 + [False] * 10 + [True] * 10
    with av.open(str(source)) as a, av.open(str(target)) as b:
        pts_in = [f.time for f in a.decode(video=0)]
        frames_out = list(b.decode(video=0))
        assert b.streams.video[0].codec_context.name == "vp8"
    assert len(frames_out) == 30
    assert np.allclose([f.time for f in frames_out], pts_in, atol=1e-3)
    with AvatarRenderer(320, 240, supersample=OFFLINE_SUPERSAMPLE) as renderer:
        neutral = renderer.render(MaskParams.neutral(frame=15, t=rows[15]["t"]))
    empty = frames_out[15].to_ndarray(format="rgb24").astype(int)
    assert np.abs(empty - neutral).mean() < 4  # the neutral avatar, up to VP8 coding


@pytest.mark.parametrize("name,content", [("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500),
                                          ("text.mp4", b"hello"), ("empty.png", b"")])
def test_bad_input_leaves_nothing(tmp_path: Path, name: str, content: bytes) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    target = tmp_path / ("out.mp4" if name.endswith(".mp4") else "out.png")
    done = maskproxy("mask", str(source), str(target), "--params-out", str(tmp_path / "p.jsonl"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_unsupported_output_format(tmp_path: Path, short_clip: Path) -> None:
    done = maskproxy("mask", str(short_clip), str(tmp_path / "out.avi"))
    assert done.returncode == 2 and "unsupported output format" in done.stderr
    assert list(tmp_path.iterdir()) == []


def _tracking(path: Path) -> subprocess.Popen[str]:
    """``maskproxy track`` started beside other work; :func:`_tracked` collects it."""
    return subprocess.Popen([sys.executable, "-m", "proxy", "track", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _tracked(process: subprocess.Popen[str]) -> list[dict]:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


def _first_seconds(source: Path, target: Path, seconds: float) -> None:
    """The first ``seconds`` of a clip, its packets copied as they are (no re-encoding: the same pixels)."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        kept = [s for s in inp.streams if s.type in ("video", "audio")]
        streams = {s.index: out.add_stream_from_template(s) for s in kept}
        for packet in inp.demux(*kept):
            if packet.pts is None or packet.pts * packet.time_base >= seconds:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def test_round_trip_fidelity(tmp_path: Path, videos_dir: Path) -> None:
    """``maskproxy track`` on ``maskproxy mask``'s output against the original, in degrees and eye widths, on the
    first 10 s of a clip with blinks and gaze shifts (d6: 3 blinks per eye).

    Measured (d6): per-eye gaze yaw mean absolute error 1.90 / 1.00 deg, pitch 1.23 / 0.99, aperture 0.029 / 0.027
    eye widths, head 0.41-1.43 deg, vergence bias -0.23 deg (its MAE, 2.2 deg, misses issue 15's 1.5: saccades
    and far gaze, see the audit), blinks 3 / 3 and 3 / 4. The bounds leave room for another machine's rounding;
    the audit (tests/audit) holds every clip's figures, this test the two commands end to end."""
    clip = tmp_path / "clip.mp4"
    _first_seconds(videos_dir / "d6.mp4", clip, 10.0)
    masked = tmp_path / "masked.mp4"
    tracking = _tracking(clip)  # the original is tracked while it is masked
    try:
        done = maskproxy("mask", str(clip), str(masked), "--keep-audio")
    finally:
        original = _tracked(tracking)
    assert done.returncode == 0, done.stderr
    after = _tracked(_tracking(masked))
    assert len(original) == len(after) == 300
    assert [r["t"] for r in original] == [r["t"] for r in after]
    found = [i for i, r in enumerate(original) if r["face"]]
    both = [i for i in found if after[i]["face"]]
    assert len(found) >= 290 and len(both) >= 0.95 * len(found)

    def errors(signal: str) -> np.ndarray:
        # null: an eye that could not be measured in that frame; compare where both were
        return np.array([after[i][signal] - original[i][signal] for i in both
                         if original[i][signal] is not None and after[i][signal] is not None])

    for side in ("right", "left"):
        yaw = errors(f"{side}_gaze_yaw")
        assert len(yaw) >= 0.9 * len(both) and np.abs(yaw).mean() <= 2.5, side
        assert np.abs(errors(f"{side}_gaze_pitch")).mean() <= 2.0, side
        assert np.abs(errors(f"{side}_aperture")).mean() <= 0.04, side
    for axis in ("yaw", "pitch", "roll"):
        assert np.abs(errors(f"head_{axis}")).mean() <= 2.0, axis
    eyes = ("right_gaze_yaw", "left_gaze_yaw")
    vergence = [(after[i][eyes[0]] - after[i][eyes[1]]) - (original[i][eyes[0]] - original[i][eyes[1]]) for i in both
                if None not in (*(original[i][e] for e in eyes), *(after[i][e] for e in eyes))]
    assert len(vergence) >= 0.9 * len(both) and abs(float(np.mean(vergence))) <= 0.75, np.mean(vergence)
    for side in ("right", "left"):
        blinks_a = count_blinks([r.get(f"{side}_aperture") for r in original], [r["t"] for r in original])
        blinks_b = count_blinks([r.get(f"{side}_aperture") for r in after], [r["t"] for r in after])
        assert blinks_a >= 2 and abs(blinks_a - blinks_b) <= 1, (side, blinks_a, blinks_b)
    with av.open(str(masked)) as container:
        assert container.streams.audio, "--keep-audio keeps the audio track"
