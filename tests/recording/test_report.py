"""``maskproxy report``: a self-contained clinical report whose plots and numbers are the stored parameters'."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from proxy.cli import main
from proxy.params import MaskParams
from proxy.recording.metadata import new_id
from proxy.recording.recorder import Recorder, RecorderSettings
from proxy.recording.store import RecordingStore
from tests.exam.streams import jerk_nystagmus, stream
from tests.recording.feed import FPS, FakeClock, bar_frame

KEY = bytes(range(3, 35))
SECONDS = 14
BLINKS = (1.5, 2.5, 13.0)  #: s
NYSTAGMUS = (4.0, 12.0, 3.0, 4.0)  #: from, to (s), frequency (Hz), peak to peak (deg)
LEFT_GAP = range(300, 306)  #: frames where the left eye could not be measured
PLACEHOLDERS = range(100, 103)  #: frames sent as the neutral avatar (no parameters)
SVG = "{http://www.w3.org/2000/svg}"


def clinical_stream() -> list[MaskParams]:
    """14 s with a 3 Hz jerk nystagmus from 4 to 12 s, three blinks, a drooping left lid and a gap in the left eye."""
    rng = np.random.default_rng(7)
    t = np.arange(SECONDS * FPS) / FPS
    start, end, frequency, size = NYSTAGMUS
    beating = np.where((t >= start) & (t < end), jerk_nystagmus(t, frequency, size), 0.0)
    aperture = np.full(t.size, 0.3)
    for at in BLINKS:
        aperture[int(at * FPS):int(at * FPS) + 4] = 0.04
    left_yaw = beating + rng.normal(0, 0.05, t.size)
    left_yaw[list(LEFT_GAP)] = np.nan
    return stream(t, right_gaze_yaw=beating + rng.normal(0, 0.05, t.size), left_gaze_yaw=left_yaw,
                  right_gaze_pitch=0.5 + rng.normal(0, 0.05, t.size), left_gaze_pitch=0.4 + rng.normal(0, 0.05, t.size),
                  right_aperture=aperture, left_aperture=aperture, right_mrd1=3.5, left_mrd1=1.5, right_mrd2=5.0,
                  left_mrd2=5.0)


EXAM_RESULT = {"id": 1, "test": "fixation", "stopped": None, "quality": {"frames": 90, "right_measured": 1.0},
               "results": [{"measure": "deviation", "horizontal_pd": 8.7, "horizontal": "eso", "vertical_pd": 0.4,
                            "vertical": "none within error", "units": {"horizontal_pd": "prism dioptres"},
                            "caveat": "Only with both eyes calibrated."}]}


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("report") / "recordings"
    root.mkdir()
    clock, recording_id = FakeClock(), new_id()
    recorder = Recorder(root / recording_id, recording_id, "consult-r", KEY,
                        RecorderSettings(min_free_bytes=0, max_queued_frames=1000), clock=clock)
    recorder.start()
    for index, params in enumerate(clinical_stream()):
        recorder.add_video(bar_frame(index), None if index in PLACEHOLDERS else params)
        if index == 5 * FPS:
            recorder.add_event("mark", {"text": "beats to the left <b>now</b>"})
        if index == 13 * FPS:
            recorder.add_event("exam_result", EXAM_RESULT)
        clock.now += 1 / FPS
    recorder.close(60)
    return root, recording_id


@pytest.fixture(scope="module")
def report(recording: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, recording_id = recording
    out = tmp_path_factory.mktemp("out") / "report.html"
    (root.parent / "key").write_text(KEY.hex())
    assert main(["report", recording_id, "--recordings-dir", str(root), "--key-file", str(root.parent / "key"),
                 "--out", str(out)]) == 0
    return out


def _images(page: str) -> list[tuple[str, str]]:
    """(data-kind, src) of every <img>."""
    return re.findall(r'<img data-kind="(\w+)" alt="[^"]*" src="([^"]+)"', page)


def _stored(recording: tuple[Path, str]) -> list[dict[str, Any]]:
    root, recording_id = recording
    with RecordingStore(root, KEY).open(recording_id, "params.jsonl") as opened:
        return [json.loads(line) for line in opened.read().splitlines()]


def _value(line: dict[str, Any], name: str) -> float:
    if name == "vergence_yaw":
        return _value(line, "right_gaze_yaw") - _value(line, "left_gaze_yaw")
    value = line.get(name) if line.get("face") else None
    return float(value) if value is not None else np.nan


def _plotted(page: str) -> dict[str, list[np.ndarray]]:
    """Each plotted signal's polyline pieces, in the SVG's own units."""
    (src,) = [src for kind, src in _images(page) if kind == "plot"]
    svg = ET.fromstring(base64.b64decode(src.split(",", 1)[1]))
    out = {}
    for group in svg.iter(f"{SVG}g"):
        name = group.get("id", "")
        if name.startswith("trace-"):
            d = group.find(f"{SVG}path").get("d")  # type: ignore[union-attr]
            pieces = [np.array(re.findall(r"-?[\d.]+", piece), dtype=float).reshape(-1, 2)
                      for piece in re.split(r"M", d) if piece.strip()]
            out[name[len("trace-"):]] = pieces
    return out


def test_report_is_one_self_contained_file(report: Path) -> None:
    page = report.read_text()
    assert "<link" not in page and "<script src" not in page and "url(http" not in page
    images = _images(page)
    assert {kind for kind, _ in images} == {"avatar", "plot"}
    assert all(src.startswith("data:image/") for _, src in images)
    assert page.count("<img") == len(images)
    assert "beats to the left &lt;b&gt;now&lt;/b&gt;" in page  # marks are text, never markup


@pytest.mark.parametrize("name", ["right_gaze_yaw", "left_gaze_yaw", "vergence_yaw", "right_aperture",
                                  "left_mrd1"])
def test_plots_are_the_stored_parameters(report: Path, recording: tuple[Path, str], name: str) -> None:
    """Every plotted point is a stored sample: an affine map (the axes) takes (time, value) onto the drawing,
    gaps stay gaps."""
    lines = _stored(recording)
    t = np.array([line["video_t"] for line in lines])
    values = np.array([_value(line, name) for line in lines])
    finite = np.isfinite(values)
    runs = np.count_nonzero(np.diff(np.concatenate([[0], finite.astype(int)])) == 1)
    pieces = _plotted(report.read_text())[name]
    assert len(pieces) == runs  # a gap in the data is a gap in the line
    drawn = np.concatenate(pieces)
    assert len(drawn) == finite.sum()
    for axis, stored in ((0, t[finite]), (1, values[finite])):
        if np.ptp(stored) == 0:
            assert np.ptp(drawn[:, axis]) == 0, (name, axis)
            continue
        fit = np.polyfit(stored, drawn[:, axis], 1)
        residual = drawn[:, axis] - np.polyval(fit, stored)
        assert np.abs(residual).max() <= 1e-3 * np.ptp(drawn[:, axis]), (name, axis)
        if axis == 1:
            assert fit[0] < 0  # SVG y grows downwards: up is up


def test_report_numbers_are_the_exam_measures(report: Path) -> None:
    page = report.read_text()
    data = json.loads(re.search(r"<script type='application/json' id='report-data'>(.*?)</script>", page,
                                re.S).group(1).replace("<\\/", "</"))
    exam = data["exam"]
    assert [b["count"] for b in exam["blinks"]] == [len(BLINKS), len(BLINKS)]
    lids = {r["eye"]: r for r in exam["lids"]}
    assert lids["left"]["ptosis"] is True and lids["right"]["ptosis"] is False
    assert lids["left"]["mrd1_mm"] == pytest.approx(1.5) and lids["right"]["mrd1_mm"] == pytest.approx(3.5)
    start, end, frequency, size = NYSTAGMUS
    for eye in ("right", "left"):
        (episode,) = [e for e in exam["nystagmus_episodes"] if e["eye"] == eye]
        assert episode["frequency_hz"] == pytest.approx(frequency, abs=0.15)
        assert episode["amplitude_deg"] == pytest.approx(size, rel=0.25)
        assert start - 0.5 <= episode["start"] <= start + 4.5 and end - 2.5 <= episode["end"] <= end + 4.5
        assert episode["beating"] != "pendular"
    assert exam["deviation_from_tests"][0]["horizontal"] == "eso"
    assert data["metadata"]["consult"] == "consult-r" and data["marks"][0]["t"] == pytest.approx(5.0, abs=0.05)
    assert "eso" in page and "8.70" in page and "Incomplete recording" not in page


def test_report_renders_in_chromium(report: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Chromium not installed at /usr/bin/chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.dataset.kind, e.naturalWidth])")
            assert sorted(kind for kind, _ in sizes) == ["avatar", "plot"] and all(w > 300 for _, w in sizes)
            text = page.inner_text("body")
            assert "Nystagmus" in text and "Blinks" in text and "beats to the left <b>now</b>" in text
            assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
        finally:
            browser.close()


def _masked_video(folder: Path, frames: int = 60) -> tuple[Path, Path]:
    """A video and its parameters as 'maskproxy mask --params-out' writes them (frame, t, the fields)."""
    video, params = folder / "visit.webm", folder / "visit.jsonl"
    with av.open(str(video), "w") as container:
        out = container.add_stream("libvpx", rate=FPS)
        out.width, out.height, out.pix_fmt = 320, 240, "yuv420p"
        out.codec_context.time_base = Fraction(1, 1000)
        for index in range(frames):
            frame = bar_frame(index)
            frame.pts, frame.time_base = round(index * 1000 / FPS), Fraction(1, 1000)
            for packet in out.encode(frame):
                container.mux(packet)
        for packet in out.encode():
            container.mux(packet)
    lines = stream(np.arange(frames) / FPS, right_gaze_yaw=np.linspace(-5, 5, frames), left_gaze_yaw=2.0,
                   right_aperture=0.3, left_aperture=0.3)
    params.write_text("".join(json.dumps(p.to_json()) + "\n" for p in lines))
    return video, params


def test_report_of_a_masked_video_with_its_params(tmp_path: Path) -> None:
    video, params = _masked_video(tmp_path)
    out = tmp_path / "visit.html"
    assert main(["report", str(video), "--out", str(out)]) == 0  # the .jsonl beside it
    page = out.read_text()
    assert {kind for kind, _ in _images(page)} == {"avatar", "plot"}
    drawn = np.concatenate(_plotted(page)["right_gaze_yaw"])
    assert len(drawn) == 60 and np.all(np.diff(drawn[:, 1]) < 0)  # the rising sweep, drawn rising
    renamed = tmp_path / "other.jsonl"
    params.rename(renamed)
    assert main(["report", str(video), "--params", str(renamed), "--out", str(out)]) == 0


def _cli(*args: str, block: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys; {block} from proxy.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_bad_sources_are_one_line_and_status_2(tmp_path: Path, recording: tuple[Path, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root, recording_id = recording
    out = str(tmp_path / "r.html")
    for args, said in (([str(tmp_path / "nothing"), "--out", out], "no such recording folder"),
                       ([recording_id, "--recordings-dir", str(root), "--out", out], "encrypted"),
                       ([str(root / recording_id), "--out", str(tmp_path / "no" / "r.html")], "no such folder")):
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and said in err, err
    done = _cli("report", str(root / recording_id), "--out", out, block="sys.modules['matplotlib'] = None;")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "maskproxy report: needs matplotlib for its plots (pip install 'maskproxy[audit]')"]
    assert not Path(out).exists()
