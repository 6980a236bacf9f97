"""``maskproxy audit``: evidence for a clinic's data-protection officer, on the clinic's own material.

It reproduces the published digital mask's evaluation:

1. AI re-identification (:mod:`proxy.audit.reid`): dlib face recognition
   against our avatar and against blur, pixelation and eye-region crops,
   with the original photos as the ceiling. Rank-1, TAR at FAR 0.01, ROC.
2. Fidelity (:mod:`proxy.audit.fidelity`): eye, lid and head signals of
   each clip, tracked before and after masking, compared frame by frame.
3. A human test kit (:mod:`proxy.audit.report`), only with ``--human-test``:
   printable multiple-choice sheets with a separate answer key. The sheets show
   original photos, so they are never written by default.

Output: ``OUT/report.json`` (every number), ``OUT/report.html`` (self-contained,
no unmasked face unless ``--include-originals``) and, with ``--human-test``,
``OUT/human_test/``. The command checks that the ``audit`` extra is installed
before it starts, and says in its output and at the top of the report whether
unmasked faces were written.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from proxy import __version__
from proxy.audit.work import PHOTO_COST_FRAMES, Task, default_jobs, run_tasks
from proxy.files.media import InputError, VideoReader

VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".y4m", ".m4v", ".ogv"}
#: Mask Rank-1 may exceed chance by at most this much.
RANK1_MARGIN = 0.05
#: Masked photos shown in the report (avatar only), and photos in the --include-originals grid.
MASKED_EXAMPLES = 8
ORIGINAL_EXAMPLES = 4
#: Modules of the ``audit`` extra (import names) that each part of the audit needs.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "faces": ("dlib", "face_recognition_models", "matplotlib"),
    "videos": ("matplotlib",),
}
EXTRA_HINT = "pip install 'maskproxy[audit]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``maskproxy audit``."""
    parser.add_argument("--faces", type=Path, help="folder of <person>/ folders, several photos of each person "
                        "(the first photo, sorted by name, is the reference)")
    parser.add_argument("--videos", type=Path, help="folder of video clips (anything PyAV reads)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (report.json, report.html; human_test/ with --human-test)")
    parser.add_argument("--include-originals", action="store_true",
                        help="show unmasked faces in report.html (off: only plots and avatars)")
    parser.add_argument("--human-test", action="store_true",
                        help="also write printable human re-identification sheets (human_test/); they show "
                        "ORIGINAL photos, so handle them as personal data (needs --faces)")
    parser.add_argument("--max-photos", type=int, default=None, metavar="N", help="use at most N photos per person")
    parser.add_argument("--max-seconds", type=float, default=None, metavar="S", help="use at most S s of each clip")
    parser.add_argument("--flip", action="store_true",
                        help="also audit every clip mirrored left-right (an unseen case at no cost in data; "
                        "doubles the fidelity time)")
    parser.add_argument("--crop", action="store_true",
                        help="also audit every clip cropped off-centre (80%% of each side, more off the left and the "
                        "bottom: the face off the picture's centre and 1.25x larger; another unseen case at no cost "
                        "in data)")
    parser.add_argument("--sheets", type=int, default=20, metavar="N",
                        help="human-test sheets with --human-test (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the human-test shuffles (default 0)")


def missing_modules(args: argparse.Namespace) -> list[str]:
    """Modules of the ``audit`` extra that the requested parts need and that cannot be imported."""
    needed = [*(EXTRA_MODULES["faces"] if args.faces is not None else ()),
              *(EXTRA_MODULES["videos"] if args.videos is not None else ())]
    missing = []
    for name in dict.fromkeys(needed):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN and infinities to null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _progress(total: int | None, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="", file=sys.stderr, leave=True, dynamic_ncols=True)


def _plan(args: argparse.Namespace) -> list[Task]:
    """Every person's photos, then every clip as it is, mirrored and cropped (as asked); checks the inputs."""
    from proxy.audit.reid import list_photos

    tasks: list[Task] = []
    if args.faces is not None:
        for person, photos in list_photos(args.faces, args.max_photos).items():
            tasks.append(Task(len(tasks), len(photos) * PHOTO_COST_FRAMES, person=person, photos=photos))
    if args.videos is not None:
        if not args.videos.is_dir():
            raise InputError(f"{args.videos}: not a directory")
        clips = sorted(p for p in args.videos.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not clips:
            raise InputError(f"{args.videos}: no video clips")
        frames = []
        for clip in clips:
            with VideoReader(clip) as reader:
                count = reader.frame_count or 0
                if args.max_seconds is not None:
                    count = min(count, int(args.max_seconds * reader.fps))
                frames.append(count)
        # the clips as they are, then each unseen variant asked for
        for flip, crop in [(False, False)] + [(True, False)] * bool(args.flip) + [(False, True)] * bool(args.crop):
            for clip, count in zip(clips, frames, strict=True):
                tasks.append(Task(len(tasks), count, clip=clip, flip=flip, crop=crop))
    return tasks


def _reidentification(photos: list[Any], args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The report section of every method over every photo, and the gallery."""
    from proxy.audit.reid import Gallery, evaluate

    gallery = Gallery.build(photos)
    if len(gallery.persons) < 2 or not gallery.queries:
        raise InputError(f"{args.faces}: re-identification needs at least 2 persons and one person with 2 usable "
                         "photos")
    labels = {p: f"P{i + 1:02d}" for i, p in enumerate(gallery.persons)}
    queries_per_person: dict[str, int] = {}
    for query in gallery.queries:
        queries_per_person[query.person] = queries_per_person.get(query.person, 0) + 1
    used = [p for p in photos if p.used]
    section = {
        "attacker": "dlib face_recognition_model_v1 (ResNet, 128-d) with the 68-point shape predictor; face "
                    "location from the original photo (dlib HOG, upsample 1; BlazeFace as fallback)",
        "methods_description": {
            "none": "original photo",
            "mask": "MaskPipeline avatar (tracker reset per photo; neutral avatar where no face is tracked)",
            "control": "the avatar with every movement neutral, at the tracked face's place and size (the floor)",
            "blur": "Gaussian blur of the face box enlarged 1.25x, sigma = box width / 12",
            "pixelate": "face box enlarged 1.25x resampled to 8x8 cells",
            "eyes": "eye band (dlib brow and eye landmarks, padded) visible, the rest grey",
        },
        "persons": len(gallery.persons),
        "person_labels": labels,
        "chance": gallery.chance,
        "queries": len(gallery.queries),
        "queries_per_person": queries_per_person,
        "references": {p: str(r.path) for p, r in gallery.references.items()},
        "photos": {
            "total": len(photos),
            "used": len(used),
            "skipped": len(photos) - len(used),
            "box_from_blazeface": sum(p.box_source == "blazeface" for p in used),
            "not_tracked_by_mask": sum(not p.tracked for p in used),
        },
        "photo_details": [{"person": p.person, "photo": str(p.path), "size": list(p.size),
                           "box": list(p.box) if p.box else None, "box_source": p.box_source,
                           "skip_reason": p.skip_reason, "tracked_by_mask": p.tracked,
                           "descriptor_missing": sorted(m for m, d in p.descriptors.items() if d is None)}
                          for p in photos],
        "methods": evaluate(gallery),
    }
    return section, gallery


def _fidelity(traces: list[Any]) -> dict[str, Any]:
    """The report section of every clip's traces."""
    from proxy.audit.fidelity import CLIP_SETS, clip_stats, vergence_by_movement

    section: dict[str, Any] = {key: [clip_stats(t) for t in traces if t.clip_set == key] for key, _, _ in CLIP_SETS
                               if any(t.clip_set == key for t in traces)}
    section["vergence_by_movement"] = {key: vergence_by_movement([t for t in traces if t.clip_set == key])
                                       for key, _, _ in CLIP_SETS if key in section}
    return section


def _targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's targets, checked; each says its ``set``: reidentification, clips, flipped or cropped."""
    from proxy.audit.fidelity import CLIP_SETS

    checks: list[dict[str, Any]] = []
    reid = report.get("reidentification")
    if reid:
        limit = reid["chance"] + RANK1_MARGIN
        for kind, words in (("original_refs", "original"), ("method_refs", "masked")):
            value = reid["methods"]["mask"][kind]["rank1"]
            checks.append({"set": "reidentification",
                           "check": f"mask Rank-1 vs {words} references <= chance + {RANK1_MARGIN} ({limit:.3f})",
                           "value": f"{value:.3f}", "pass": value <= limit})
    fidelity = report.get("fidelity", {})
    for key, kind, _ in CLIP_SETS:
        for clip in fidelity.get(key, []):
            checks += [{"set": kind, **check} for check in clip["targets"]]
    return checks


def _tally(targets: list[dict[str, Any]]) -> str:
    """'reidentification 2/2, clips 90/99' for the summary line."""
    sets = dict.fromkeys(c["set"] for c in targets)
    return ", ".join(f"{s} {sum(c['pass'] for c in targets if c['set'] == s)}/"
                     f"{sum(c['set'] == s for c in targets)}" for s in sets) or "none"


def _images(report: dict[str, Any], gallery: Any, traces: list[Any], include_originals: bool) -> dict[str, str]:
    """Every inline image of report.html, keyed by where it goes."""
    from proxy.audit.fidelity import CLIP_SETS
    from proxy.audit.reid import METHODS
    from proxy.audit.report import (
        bias_chart,
        bland_altman_chart,
        img,
        png_uri,
        rank1_chart,
        roc_chart,
        strip,
        trace_chart,
    )

    images: dict[str, str] = {}
    if gallery is not None:
        reid = report["reidentification"]
        images["rank1"] = img(rank1_chart(reid["methods"], reid["chance"]), "plot", "Rank-1 per method")
        images["roc"] = img(roc_chart(reid["methods"]), "plot", "ROC curves")
        examples = sorted(gallery.queries, key=lambda q: (not q.tracked, q.person, q.path.name))
        picked = []
        for query in examples:  # one per person first, then fill up
            if query.person not in {p.person for p in picked}:
                picked.append(query)
        picked += [q for q in examples if q not in picked]
        picked = picked[:MASKED_EXAMPLES]
        images["masked_photos"] = img(png_uri(strip([q.thumbs["mask"] for q in picked])), "avatar",
                                      "masked photos") if picked else ""
        if include_originals and picked:
            rows = [strip([q.thumbs[m] for m in METHODS]) for q in picked[:ORIGINAL_EXAMPLES]]
            grid = np.concatenate([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=255) for r in rows])
            images["originals"] = img(png_uri(grid), "original", "methods compared on original photos")
    fidelity = report.get("fidelity", {})
    for key, _, _ in CLIP_SETS:
        if fidelity.get(key):
            images[f"bias:{key}"] = img(bias_chart(fidelity[key]), "plot", "signed error per clip and eye")
    for trace in traces:
        images[f"trace:{trace.name}"] = img(trace_chart(trace), "plot", f"{trace.name} signals")
        images[f"agreement:{trace.name}"] = img(bland_altman_chart(trace), "plot",
                                                f"{trace.name} error against the original's value")
        if trace.samples:
            images[f"frames:{trace.name}"] = img(png_uri(strip([s for _, s in trace.samples])), "avatar",
                                                 f"{trace.name} masked frames")
    return images


def run_audit(args: argparse.Namespace) -> int:
    """Run the whole audit and write OUT/report.json, OUT/report.html and OUT/human_test/."""
    from proxy.audit.report import write_html, write_human_test

    if args.faces is None and args.videos is None:
        raise InputError("give --faces, --videos or both")
    if args.human_test and args.faces is None:
        raise InputError("--human-test needs --faces (the sheets show masked and original photos)")
    missing = missing_modules(args)
    if missing:
        print(f"maskproxy audit: needs the 'audit' extra ({', '.join(missing)} missing): {EXTRA_HINT}",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": {"faces": str(args.faces) if args.faces else None,
                   "videos": str(args.videos) if args.videos else None,
                   "max_photos": args.max_photos, "max_seconds": args.max_seconds,
                   "include_originals": bool(args.include_originals), "human_test": bool(args.human_test),
                   "flip": bool(args.flip), "crop": bool(args.crop), "eye_samples": args.eye_samples,
                   "supersample": args.supersample,
                   "trim_every": args.trim_every},
        "timing_s": {},
    }
    tasks = _plan(args)
    jobs = min(args.jobs or default_jobs(), len(tasks))
    report["inputs"]["jobs"] = jobs
    photos = [t for t in tasks if t.clip is None]
    clips = [t for t in tasks if t.clip is not None]
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        bars = {}
        if photos:
            bars["photos"] = stack.enter_context(_progress(sum(len(t.photos) for t in photos), "photos"))
        if clips:
            bars["frames"] = stack.enter_context(_progress(int(sum(t.cost for t in clips)) or None, "video frames"))
        results = run_tasks(tasks, args, jobs, bars)
    report["timing_s"]["photos_and_clips"] = round(time.perf_counter() - start, 2)
    gallery, traces = None, [r for t, r in zip(tasks, results, strict=True) if t.clip is not None]
    if photos:
        report["reidentification"], gallery = _reidentification(
            [photo for t, r in zip(tasks, results, strict=True) if t.clip is None for photo in r], args)
    if clips:
        report["fidelity"] = _fidelity(traces)
    start = time.perf_counter()
    originals: list[dict[str, str]] = []
    if gallery is not None and args.human_test and args.sheets > 0:
        report["human_test"] = write_human_test(out, gallery, args.sheets, args.seed)
        originals.append({"file": report["human_test"]["sheets_file"], "why": "--human-test"})
    report["targets"] = _targets(report)
    images = _images(report, gallery, traces, args.include_originals)
    report["report_images"] = {"plot": sum('data-kind="plot"' in v for v in images.values()),
                               "avatar": sum('data-kind="avatar"' in v for v in images.values()),
                               "original": sum('data-kind="original"' in v for v in images.values())}
    if report["report_images"]["original"]:
        originals.insert(0, {"file": "report.html", "why": "--include-originals"})
    report["originals_written"] = originals
    report["timing_s"]["report"] = round(time.perf_counter() - start, 2)
    report["timing_s"]["total"] = round(time.perf_counter() - started, 2)
    report = _clean(report)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    write_html(out / "report.html", report, gallery, images, args.include_originals)
    met = sum(c["pass"] for c in report["targets"])
    print(f"maskproxy audit: {out / 'report.html'} ({report['timing_s']['total']:.0f} s; "
          f"{met}/{len(report['targets'])} targets met: {_tally(report['targets'])})", file=sys.stderr)
    if originals:
        print("maskproxy audit: UNMASKED FACES written to "
              + ", ".join(f"{out / o['file']} ({o['why']})" for o in originals)
              + "; handle them as personal data", file=sys.stderr)
    else:
        print("maskproxy audit: no unmasked face written (only plots and avatars)", file=sys.stderr)
    return 0
