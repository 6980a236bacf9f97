"""``maskproxy audit`` on a small slice of the shared data: numbers, report, human test kit, rendering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from proxy.audit.fidelity import SIGNALS, blink_times, pearson
from proxy.audit.reid import METHODS, rank1, roc_curve, tar_at_far
from proxy.cli import main

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


@pytest.fixture(scope="module")
def audit_out(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, short_clip: Path) -> Path:
    """One audit run without originals, on the subset and a 3 s clip."""
    root = tmp_path_factory.mktemp("audit")
    faces = _subset(faces_dir, root / "faces")
    (root / "videos").mkdir()
    _truncate(short_clip, root / "videos" / "clip.mp4", CLIP_SECONDS)
    out = root / "out"
    assert main(["audit", "--faces", str(faces), "--videos", str(root / "videos"), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def report(audit_out: Path) -> dict:
    return json.loads((audit_out / "report.json").read_text())


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
    for signal in clip["signals"].values():
        assert signal["pearson_r"] is None or -1.0 <= signal["pearson_r"] <= 1.0
    assert len(clip["trace"]["t"]) == clip["frames"]
    assert all(len(clip["trace"]["masked"][s]) == clip["frames"] for s in SIGNALS)
    assert set(clip["blinks"]) == {"right", "left"}
    assert all(isinstance(b["original"], int) and isinstance(b["masked"], int) for b in clip["blinks"].values())
    assert report["targets"] and all(isinstance(c["pass"], bool) for c in report["targets"])


def test_report_html_has_no_original_face(audit_out: Path, report: dict) -> None:
    html = (audit_out / "report.html").read_text()
    images = _images(html)
    # plots: Rank-1 chart, ROC curves, the clip's traces; avatars: masked photos, the clip's masked frames
    assert len(images) == 5
    assert sum('data-kind="plot"' in i for i in images) == 3
    assert sum('data-kind="avatar"' in i for i in images) == 2
    assert not any('data-kind="original"' in i for i in images)
    assert all('src="data:image/png;base64,' in i for i in images)
    assert report["report_images"] == {"plot": 3, "avatar": 2, "original": 0}
    assert "http://" not in html and "https://" not in html
    for person in PEOPLE:  # pseudonymised in the HTML
        assert person not in html


def test_include_originals(tmp_path: Path, faces_dir: Path) -> None:
    faces = _subset(faces_dir, tmp_path / "faces")
    out = tmp_path / "out"
    assert main(["audit", "--faces", str(faces), "--out", str(out), "--include-originals", "--max-photos", "2",
                 "--sheets", "0"]) == 0
    images = _images((out / "report.html").read_text())
    assert sum('data-kind="original"' in i for i in images) == 1
    assert len(images) == 4  # Rank-1, ROC, masked photos, the methods grid on originals
    assert not (out / "human_test").exists()


def test_human_test_kit_keeps_the_key_apart(audit_out: Path, report: dict) -> None:
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
            assert len(widths) == 5 and all(w > 0 for w in widths)
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
