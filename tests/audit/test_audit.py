"""``maskproxy audit`` on a small slice of the shared data: numbers, report, human test kit, rendering."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from proxy.audit.fidelity import (
    MEASURED,
    MOVEMENT_BANDS,
    SIGNALS,
    ClipTrace,
    blink_times,
    clip_stats,
    measured_row,
    pearson,
    vergence_by_movement,
)
from proxy.audit.reid import METHODS, rank1, roc_curve, tar_at_far
from proxy.cli import main
from proxy.params import MaskParams

#: Four people with several usable photos: three with large faces, one with small ones.
PEOPLE = ("alex_lacamoire", "barack_obama", "kit_harington", "ben_affleck")
PHOTOS_PER_PERSON = 3
CLIP_SECONDS = 3.0


def _subset(faces_dir: Path, target: Path) -> Path:
    """4 people x 3 photos, symlinked."""
    for person in PEOPLE:
        source = faces_dir / person
        if not source.is_dir():
            pytest.skip(f"{source} missing from the shared data")
        (target / person).mkdir(parents=True)
        for photo in sorted(source.iterdir())[:PHOTOS_PER_PERSON]:
            (target / person / photo.name).symlink_to(photo.resolve())
    return target


def _truncate(clip: Path, target: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``clip``, re-encoded (H.264)."""
    with av.open(str(clip)) as source, av.open(str(target), "w") as out:
        stream_in = source.streams.video[0]
        rate = stream_in.average_rate or 30
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        for index, frame in enumerate(source.decode(stream_in)):
            if index >= seconds * float(rate):
                break
            new = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in stream.encode(new):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target


def _run(args: list[str]) -> tuple[int, str]:
    """``maskproxy`` in this process: exit status and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(args)
    return status, err.getvalue()


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, short_clip: Path) -> tuple[Path, str]:
    """One audit run with the default options, on the subset and a 3 s clip: output folder and stderr."""
    root = tmp_path_factory.mktemp("audit")
    faces = _subset(faces_dir, root / "faces")
    (root / "videos").mkdir()
    _truncate(short_clip, root / "videos" / "clip.mp4", CLIP_SECONDS)
    out = root / "out"
    status, err = _run(["audit", "--faces", str(faces), "--videos", str(root / "videos"), "--out", str(out)])
    assert status == 0, err
    return out, err


@pytest.fixture(scope="module")
def audit_out(audit_run: tuple[Path, str]) -> Path:
    return audit_run[0]


@pytest.fixture(scope="module")
def report(audit_out: Path) -> dict:
    return json.loads((audit_out / "report.json").read_text())


@pytest.fixture(scope="module")
def originals_run(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> tuple[Path, str]:
    """Photos only, asking for everything that writes unmasked faces: --include-originals and --human-test."""
    root = tmp_path_factory.mktemp("originals")
    faces = _subset(faces_dir, root / "faces")
    out = root / "out"
    status, err = _run(["audit", "--faces", str(faces), "--out", str(out), "--include-originals", "--human-test",
                        "--max-photos", "2"])
    assert status == 0, err
    return out, err


def _images(html: str) -> list[str]:
    return re.findall(r"<img\b[^>]*>", html)


def test_report_json_numbers(report: dict) -> None:
    reid = report["reidentification"]
    assert reid["persons"] == len(PEOPLE)
    assert reid["chance"] == pytest.approx(1 / len(PEOPLE))
    assert reid["photos"]["total"] == len(PEOPLE) * PHOTOS_PER_PERSON
    assert reid["photos"]["used"] + reid["photos"]["skipped"] == reid["photos"]["total"]
    assert set(reid["methods"]) == set(METHODS)
    for method in METHODS:
        for kind in ("original_refs", "method_refs"):
            entry = reid["methods"][method][kind]
            assert 0.0 <= entry["rank1"] <= 1.0 and 0.0 <= entry["rank1_pooled"] <= 1.0
            assert 0.0 <= entry["tar_at_far_0.01"] <= 1.0
            assert entry["far_achieved"] <= 0.01 + 1e-9
            assert len(entry["roc"]["far"]) == len(entry["roc"]["tar"]) >= 2
            assert set(entry["rank1_per_person"]) == set(PEOPLE)
    none, mask = reid["methods"]["none"], reid["methods"]["mask"]
    assert none["original_refs"]["rank1"] >= 0.75
    assert mask["original_refs"]["rank1"] <= reid["chance"] + 0.35
    assert mask["method_refs"]["rank1"] <= reid["chance"] + 0.35

    (clip,) = report["fidelity"]["clips"]
    assert clip["frames"] == pytest.approx(CLIP_SECONDS * clip["fps"], abs=2)
    assert set(clip["signals"]) == set(SIGNALS)
    for value in clip["face_found"].values():
        assert not isinstance(value, float) or 0.0 <= value <= 1.0
    assert clip["face_found"]["original"] > 0.5
    for name, signal in clip["signals"].items():
        assert signal["frames"] > 0.5 * clip["frames"]
        assert 0.0 <= abs(signal["bias"]) <= signal["mae"]
        assert signal["unit"] == ("eye widths" if "aperture" in name else "deg")
        # r only where the original varies enough for it to mean something
        assert signal["r_applies"] == (signal["original_sd"] >= signal["r_min_sd"])
        assert (signal["pearson_r"] is None) != signal["r_applies"]
        assert signal["pearson_r"] is None or -1.0 <= signal["pearson_r"] <= 1.0
    # the vergence is right minus left, frame by frame
    trace = clip["trace"]
    right = np.array(trace["original"]["right_gaze_yaw"], dtype=float)
    left = np.array(trace["original"]["left_gaze_yaw"], dtype=float)
    assert np.nanstd(right - left) == pytest.approx(clip["signals"]["vergence_yaw"]["original_sd"], abs=0.01)
    assert len(trace["t"]) == len(trace["face"]["original"]) == clip["frames"]
    assert all(len(trace["masked"][s]) == clip["frames"] for s in MEASURED)
    assert set(clip["eyes"]) == {"right", "left"}
    assert set(clip["blinks"]) == {"right", "left"}
    assert all(isinstance(b["original"], int) and isinstance(b["masked"], int) for b in clip["blinks"].values())
    # every target of the table, once per clip, in report.json and in the clip's own section
    measures = [c["measure"] for c in clip["targets"]]
    assert len(measures) == len(set(measures)) == 9
    # the vergence error by what the eyes were doing: over all compared frames it is the clip's own
    bands = report["fidelity"]["vergence_by_movement"]["clips"]
    assert bands[0]["frames"] == clip["signals"]["vergence_yaw"]["frames"]
    assert bands[0]["mae"] == pytest.approx(clip["signals"]["vergence_yaw"]["mae"])
    assert sum(b["frames"] for b in bands[1:]) <= bands[0]["frames"]
    assert all(b["mae"] is None or (abs(b["bias"]) <= b["mae"] <= b["p95"] + 1e-9) for b in bands)
    fidelity_checks = [c for c in report["targets"] if c["set"] == "clips"]
    assert [c["measure"] for c in fidelity_checks] == measures
    assert report["targets"] and all(isinstance(c["pass"], bool) for c in report["targets"])


def test_report_html_has_no_original_face(audit_out: Path, report: dict) -> None:
    html = (audit_out / "report.html").read_text()
    images = _images(html)
    # plots: Rank-1 chart, ROC curves, the bias chart, the clip's traces and its error-vs-value chart;
    # avatars: masked photos, the clip's masked frames
    assert len(images) == 7
    assert sum('data-kind="plot"' in i for i in images) == 5
    assert sum('data-kind="avatar"' in i for i in images) == 2
    assert not any('data-kind="original"' in i for i in images)
    assert all('src="data:image/png;base64,' in i for i in images)
    assert report["report_images"] == {"plot": 5, "avatar": 2, "original": 0}
    assert "http://" not in html and "https://" not in html
    for person in PEOPLE:  # pseudonymised in the HTML
        assert person not in html


def test_no_unmasked_face_written_by_default(audit_run: tuple[Path, str], report: dict) -> None:
    """Issue 14.12: the human-test sheets show original photos, so the default run writes none."""
    out, err = audit_run
    assert not (out / "human_test").exists()
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    assert "human_test" not in report and report["originals_written"] == []
    assert "no unmasked face written" in err
    html = (out / "report.html").read_text()
    assert html.index("No unmasked face was written") < html.index("<h2>")  # said at the top


def test_originals_are_opt_in_and_announced(originals_run: tuple[Path, str]) -> None:
    """Issue 14.12: --include-originals and --human-test write unmasked faces, and both say so."""
    out, err = originals_run
    images = _images((out / "report.html").read_text())
    assert sum('data-kind="original"' in i for i in images) == 1
    assert len(images) == 4  # Rank-1, ROC, masked photos, the methods grid on originals
    report = json.loads((out / "report.json").read_text())
    assert report["originals_written"] == [{"file": "report.html", "why": "--include-originals"},
                                           {"file": "human_test/sheets.html", "why": "--human-test"}]
    line = next(line for line in err.splitlines() if "UNMASKED FACES" in line)
    assert str(out / "report.html") in line and str(out / "human_test" / "sheets.html") in line
    html = (out / "report.html").read_text()
    top = html[:html.index("<h2>")]
    assert "Unmasked faces were written" in top and "human_test/sheets.html" in top


def test_human_test_needs_faces(tmp_path: Path) -> None:
    status, err = _run(["audit", "--videos", str(tmp_path), "--out", str(tmp_path / "out"), "--human-test"])
    assert status == 2 and "--human-test needs --faces" in err


def test_human_test_kit_keeps_the_key_apart(originals_run: tuple[Path, str]) -> None:
    audit_out = originals_run[0]
    report = json.loads((audit_out / "report.json").read_text())
    folder = audit_out / "human_test"
    sheets = (folder / "sheets.html").read_text()
    key = json.loads((folder / "answers.json").read_text())["sheets"]
    assert (folder / "answers.html").is_file()
    queries = report["reidentification"]["queries"]
    assert len(key) == report["human_test"]["sheets"] == min(20, queries)
    assert sheets.count('<section class="sheet">') == len(key)
    options = min(5, len(PEOPLE))
    for entry in key:
        assert entry["options"][entry["answer"]] == entry["person"]
        assert len(entry["options"]) == options
    images = _images(sheets)
    assert sum('data-kind="avatar"' in i for i in images) == len(key)
    assert sum('data-kind="original"' in i for i in images) == len(key) * options
    for person in PEOPLE:
        assert person not in sheets
    assert "answer" not in sheets.lower()


def test_report_renders_in_chromium(audit_out: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Chromium not installed at /usr/bin/chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto((audit_out / "report.html").as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            assert len(widths) == 7 and all(w > 0 for w in widths)
            assert "Re-identification" in page.inner_text("body")
        finally:
            browser.close()


def test_blink_times() -> None:
    t = np.arange(60) / 30
    trace = np.full(60, 0.3)
    trace[10:14] = 0.05  # blink
    trace[20:22] = 0.18  # narrowed by 40% (a squint, a downward glance): not a blink
    trace[30:33] = 0.1
    trace[33:36] = 0.15  # hovering between the thresholds: still the same closure
    trace[36:38] = 0.08
    trace[50:52] = np.nan  # no face: the state is kept
    count, times = blink_times(trace, t)
    assert count == 2 and times == pytest.approx([10 / 30, 30 / 30], abs=1e-3)
    assert blink_times(np.array([0.3, 0.05, np.nan, 0.3]), np.arange(4.0)) == (1, [1.0])
    assert blink_times(np.array([0.05, 0.1]), np.arange(2.0)) == (0, [])  # still closed at the end


def test_metrics() -> None:
    # a constant answer (all distances equal) scores exactly chance
    truth = np.array([0, 0, 1, 1, 2, 2])
    score, per_person = rank1(np.ones((6, 3)), truth, 3)
    assert score == pytest.approx(1 / 3) and per_person == [1.0, 0.0, 0.0]
    # a query without a descriptor is a miss
    distances = np.array([[0.1, 0.9], [np.inf, np.inf]])
    assert rank1(distances, np.array([0, 1]), 2)[0] == pytest.approx(0.5)
    genuine = np.array([0.1, 0.2, 0.3, 0.9])
    impostor = np.linspace(0.25, 1.0, 100)
    tar, far, threshold = tar_at_far(genuine, impostor)
    assert far <= 0.01 and threshold == pytest.approx(impostor[1])
    assert tar == pytest.approx(0.5)
    roc = roc_curve(genuine, impostor)
    assert roc["far"][-1] == 1.0 and roc["tar"][-1] == 1.0
    assert pearson(np.arange(5.0), 2 * np.arange(5.0)) == pytest.approx(1.0)
    assert pearson(np.ones(5), np.arange(5.0)) is None


def test_rank1_over_reference_choices() -> None:
    """Identity-bearing descriptors score 1 whatever the references; constant ones score exactly chance."""
    from proxy.audit.reid import Gallery, PhotoResult, rank1_over_references

    persons = ["a", "b", "c", "d"]
    rng = np.random.default_rng(1)

    def photos(describe: object) -> Gallery:
        out = []
        for k, person in enumerate(persons):
            for j in range(2 + k):
                photo = PhotoResult(person, Path(f"{person}{j}.jpg"), (100, 100), box=(0, 0, 10, 10))
                photo.descriptors = {"x": describe(k)}  # type: ignore[operator]
                out.append(photo)
        return Gallery.build(out)

    centres = rng.normal(size=(4, 8))
    identity = rank1_over_references(photos(lambda k: centres[k] + 0.01 * rng.normal(size=8)), "x", "x")
    assert identity is not None and identity["mean"] == identity["p5"] == 1.0
    constant = rank1_over_references(photos(lambda k: np.zeros(8)), "x", "x")
    assert constant is not None and constant["mean"] == pytest.approx(1 / len(persons))


def _synthetic_trace() -> ClipTrace:
    """100 frames with known errors: the mask adds +1 deg to the right eye's yaw and -1 deg to the left's
    (a false 2 deg vergence), the original has no face in frames 0-9 (the re-tracker finds the neutral
    avatar there) and cannot measure the left eye in frames 10-19."""
    n = 100
    t = np.arange(n) / 30
    yaw = 10 * np.sin(t * 3)
    rows_o, rows_m = [], []
    for i in range(n):
        original = MaskParams(frame=i, t=t[i], face=i >= 10, right_gaze_yaw=yaw[i], left_gaze_yaw=yaw[i],
                              right_gaze_pitch=0.5 * yaw[i], left_gaze_pitch=0.5 * yaw[i],
                              right_aperture=0.3 + 0.001 * (i % 3), left_aperture=0.3, head_yaw=yaw[i])
        if 10 <= i < 20:
            original.left_gaze_yaw = original.left_gaze_pitch = None  # type: ignore[assignment]
        masked = MaskParams(frame=i, t=t[i], face=True, right_gaze_yaw=yaw[i] + 1, left_gaze_yaw=yaw[i] - 1,
                            right_gaze_pitch=0.5 * yaw[i], left_gaze_pitch=0.5 * yaw[i], right_aperture=0.32,
                            left_aperture=0.3, head_yaw=yaw[i])
        rows_o.append(measured_row(original))
        rows_m.append(measured_row(masked))
    face_o = np.arange(n) >= 10
    return ClipTrace("synthetic", 30.0, (640, 480), t, np.array(rows_o), np.array(rows_m), face_o,
                     np.ones(n, dtype=bool))


def test_errors_in_physical_units() -> None:
    stats = clip_stats(_synthetic_trace())
    signals = stats["signals"]
    right, left, vergence = signals["right_gaze_yaw"], signals["left_gaze_yaw"], signals["vergence_yaw"]
    assert right["frames"] == 90 and left["frames"] == 80 and vergence["frames"] == 80
    assert right["mae"] == pytest.approx(1.0) and right["bias"] == pytest.approx(1.0)
    assert left["bias"] == pytest.approx(-1.0)
    assert vergence["mae"] == pytest.approx(2.0) and vergence["bias"] == pytest.approx(2.0)
    assert right["r_applies"] and right["pearson_r"] == pytest.approx(1.0)
    # the original's vergence and apertures barely move: r says nothing there
    assert not vergence["r_applies"] and vergence["pearson_r"] is None
    assert signals["right_aperture"]["pearson_r"] is None and signals["right_aperture"]["bias"] > 0.015
    # the neutral avatar over frames 0-9 is not a found face
    found = stats["face_found"]
    assert found["original"] == pytest.approx(0.9) and found["masked"] == pytest.approx(0.9)
    assert found["masked_where_original"] == 1.0 and found["agreement"] == 1.0
    assert found["neutral_avatar_frames"] == 10
    # eye measurable: the left eye's gaze was not measurable in 10 of the 90 face frames
    gaze = stats["eyes"]["left"]["gaze"]
    assert gaze["original"] == pytest.approx(80 / 90) and gaze["measured_both"] == pytest.approx(80 / 90)
    assert gaze["masked_only"] == 10 and gaze["agreement"] == pytest.approx(80 / 90)
    assert stats["eyes"]["left"]["aperture"]["measured_both"] == 1.0
    verdict = {c["measure"]: c["pass"] for c in stats["targets"]}
    assert not verdict["vergence yaw (R - L): MAE / bias"]  # a 2 deg false vergence
    assert verdict["gaze yaw R / L, pitch R / L: MAE"]  # 1 deg per eye is within 2
    assert verdict["aperture R / L: MAE"]  # 0.02 eye widths is within 0.03
    assert not verdict["gaze measured in frames with a face R / L"]  # 89% < 90%
    assert verdict["masked face found where the original had one"]


def test_vergence_error_by_what_the_eyes_were_doing() -> None:
    """A false vergence made only during a saccade and only at far gaze lands in those bands, not in fixation."""
    fps, frames = 30.0, 120
    t = np.arange(frames) / fps
    original = np.full((frames, len(MEASURED)), np.nan)
    right, left = list(MEASURED).index("right_gaze_yaw"), list(MEASURED).index("left_gaze_yaw")
    gaze = np.zeros(frames)
    gaze[40:] = 10.0  # a 10 deg saccade between frames 39 and 40 (150 deg/s at 30 fps, in centred differences)
    gaze[80:] = 35.0  # then far to the side from frame 80 (its jump is a saccade too)
    original[:, right] = original[:, left] = gaze
    masked = original.copy()
    masked[39:41, right] += 3.0  # +3 deg of vergence during the saccade
    masked[82:, right] -= 4.0  # -4 deg once far to the side (after its own jump)
    found = np.ones(frames, bool)
    trace = ClipTrace("synthetic", fps, (64, 64), t, original, masked, found, found)
    rows = {row["band"]: row for row in vergence_by_movement([trace, trace])}  # pooled over two clips
    assert list(rows) == ["all compared frames", *(name for name, _, _ in MOVEMENT_BANDS)]
    assert rows["all compared frames"]["frames"] == 2 * frames
    assert rows["all compared frames"]["mae"] == pytest.approx(clip_stats(trace)["signals"]["vergence_yaw"]["mae"])
    # the saccades: frames 39 and 40 (150 deg/s), and 79, the last frame within 20 deg before the jump to 35
    saccade = rows["saccade, 100 deg/s or faster, within 20 deg"]
    assert saccade["frames"] == 2 * 3 and saccade["bias"] == pytest.approx(2.0) and saccade["p95"] == pytest.approx(3.0)
    fixating = rows["fixating, within 20 deg"]
    assert fixating["frames"] == 2 * (80 - 3) and fixating["mae"] == 0.0 and fixating["bias"] == 0.0
    far = rows["30 deg or more to the side"]
    assert far["frames"] == 2 * 40 and far["bias"] == pytest.approx(-4.0 * 38 / 40)
    assert rows["20-30 deg to the side"]["frames"] == 0 and rows["20-30 deg to the side"]["mae"] is None


def test_none_means_not_measurable() -> None:
    params = MaskParams(face=True, right_gaze_yaw=3.0)
    params.left_gaze_yaw = None  # type: ignore[assignment]
    row = dict(zip(MEASURED, measured_row(params), strict=True))
    assert row["right_gaze_yaw"] == 3.0 and np.isnan(row["left_gaze_yaw"])
    assert all(np.isnan(v) for v in measured_row(MaskParams(face=False)))


@pytest.mark.parametrize(("module", "part"), [("matplotlib", "videos"), ("dlib", "faces"),
                                              ("face_recognition_models", "faces")])
def test_missing_audit_extra_is_one_line(tmp_path: Path, faces_dir: Path, short_clip: Path, module: str,
                                         part: str) -> None:
    """Issue 14.13: without the ``audit`` extra the command says so in one line, exit 2, before starting."""
    if part == "faces":
        inputs = ["--faces", str(_subset(faces_dir, tmp_path / "faces")), "--max-photos", "2"]
    else:
        (tmp_path / "videos").mkdir()
        (tmp_path / "videos" / short_clip.name).symlink_to(short_clip)
        inputs = ["--videos", str(tmp_path / "videos"), "--max-seconds", "0.3"]
    out = tmp_path / "out"
    block = (f"import sys; sys.modules[{module!r}] = None; from proxy.cli import main; "
             "raise SystemExit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", block, "audit", *inputs, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and module in lines[0] and "pip install 'maskproxy[audit]'" in lines[0], done.stderr
    assert not out.exists()  # checked before starting: nothing made


@pytest.fixture(scope="module")
def flip_run(audit_out: Path) -> tuple[Path, str]:
    """The clip and its mirror image, 1 s each, traced side by side in two processes."""
    out = audit_out.parent / "flip"
    status, err = _run(["audit", "--videos", str(audit_out.parent / "videos"), "--out", str(out), "--flip",
                        "--max-seconds", "1", "--jobs", "2"])
    assert status == 0, err
    return out, err


@pytest.fixture(scope="module")
def crop_run(audit_out: Path) -> tuple[Path, str]:
    """The clip and an off-centre crop of it, 1 s each, traced one after the other in this process."""
    out = audit_out.parent / "crop"
    status, err = _run(["audit", "--videos", str(audit_out.parent / "videos"), "--out", str(out), "--crop",
                        "--max-seconds", "1", "--jobs", "1"])
    assert status == 0, err
    return out, err


def test_flip_audits_the_mirrored_clip(flip_run: tuple[Path, str]) -> None:
    """--flip adds each clip mirrored left-right: the patient's right eye becomes the left, yaw and roll change sign."""
    out, err = flip_run
    flipped = json.loads((out / "report.json").read_text())
    (plain,), (mirror,) = flipped["fidelity"]["clips"], flipped["fidelity"]["flipped_clips"]
    assert mirror["clip"] == f"{plain['clip']} (flipped)" and mirror["flipped"] and not plain["flipped"]
    assert {c["set"] for c in flipped["targets"]} == {"clips", "flipped"}
    assert re.search(r"clips \d/9, flipped \d/9", err)

    def median(clip: dict, name: str) -> float:
        return float(np.nanmedian(np.array(clip["trace"]["original"][name], dtype=float)))

    for name in ("head_roll", "head_yaw"):
        assert median(mirror, name) == pytest.approx(-median(plain, name), abs=2.0)
    assert median(mirror, "right_aperture") == pytest.approx(median(plain, "left_aperture"), abs=0.03)


def test_crop_audits_the_clip_cropped_off_centre(crop_run: tuple[Path, str]) -> None:
    """--crop adds each clip cropped off-centre: a smaller picture, the same person, the same eyes (the lids are
    measured in eye widths, so they do not change with the crop)."""
    from proxy.audit.fidelity import crop_off_centre

    picture = np.zeros((480, 641, 3), np.uint8)
    assert crop_off_centre(picture).shape == (384, 512, 3) and crop_off_centre(picture).flags.c_contiguous
    out, err = crop_run
    report = json.loads((out / "report.json").read_text())
    (plain,), (cropped,) = report["fidelity"]["clips"], report["fidelity"]["cropped_clips"]
    assert cropped["clip"] == f"{plain['clip']} (cropped)" and cropped["cropped"] and not plain["cropped"]
    assert cropped["size"] == [int(v * 0.8) // 2 * 2 for v in plain["size"]]
    assert {c["set"] for c in report["targets"]} == {"clips", "cropped"}
    assert re.search(r"clips \d/9, cropped \d/9", err)
    assert report["inputs"]["crop"] and "cropped off-centre" in (out / "report.html").read_text()
    for name in ("right_aperture", "left_aperture"):
        original = np.nanmedian(np.array(plain["trace"]["original"][name], dtype=float))
        assert np.nanmedian(np.array(cropped["trace"]["original"][name], dtype=float)) == pytest.approx(original,
                                                                                                       abs=0.03)


def test_clips_traced_in_other_processes_give_the_same_figures(flip_run: tuple[Path, str],
                                                              crop_run: tuple[Path, str]) -> None:
    """--jobs spreads clips over processes to finish sooner on a clinic's cores; the figures must not change. Both
    runs trace the clip as it is: once beside its mirror image in a second process, once alone in this one."""
    (spread,), (alone,) = (json.loads((out / "report.json").read_text())["fidelity"]["clips"]
                           for out, _ in (flip_run, crop_run))
    assert spread["frames"] == alone["frames"] > 0
    assert spread == alone
    inputs = [json.loads((out / "report.json").read_text())["inputs"]["jobs"] for out, _ in (flip_run, crop_run)]
    assert inputs == [2, 1]
