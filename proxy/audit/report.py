"""Output of ``maskproxy audit``: plots, the self-contained HTML report and the human test kit.

The report inlines every image as a base64 PNG, so it is one file a data
protection officer can archive or mail. Each ``<img>`` says what it shows in
``data-kind``: ``plot``, ``avatar`` (masked faces only) or ``original``
(unmasked faces; only with ``--include-originals``). The human test kit needs
original faces by design, so it is made only with ``--human-test``; it lives
in its own folder, its answer key in separate files. The report says at its
top whether unmasked faces were written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from proxy.audit.fidelity import CLIP_SETS, EYES, SIGNALS, ClipTrace
from proxy.audit.reid import METHOD_LABELS, METHODS, REFERENCE_DRAWS, Gallery, PhotoResult

#: Options per human-test sheet (faces), besides "none of these".
SHEET_OPTIONS = 5
LETTERS = "ABCDEFGH"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_uri(image: np.ndarray) -> str:
    """RGB uint8 array as a data: URI."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def figure_uri(fig: Any) -> str:
    """A matplotlib figure as a data: URI (and closes it)."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img(uri: str, kind: str, alt: str, width: int | None = None) -> str:
    """An inline ``<img>`` tagged with what it shows."""
    size = f' style="max-width:{width}px"' if width else ""
    return f'<img data-kind="{kind}" alt="{html.escape(alt)}" src="{uri}"{size}>'


def strip(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images side by side (same height), on white."""
    height = max(i.shape[0] for i in images)
    width = sum(i.shape[1] for i in images) + gap * (len(images) - 1)
    out = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for image in images:
        out[:image.shape[0], x:x + image.shape[1]] = image
        x += image.shape[1] + gap
    return out


def rank1_chart(reid: dict[str, Any], chance: float) -> str:
    """Bar chart of Rank-1 per method, against original and against method references, with chance."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = np.arange(len(METHODS))
    orig = [reid[m]["original_refs"]["rank1"] for m in METHODS]
    same = [reid[m]["method_refs"]["rank1"] for m in METHODS]
    ax.bar(x - 0.2, orig, 0.4, label="vs original references", color="#3b6ea8")
    ax.bar(x + 0.2, same, 0.4, label="vs references with the same method", color="#e08a2c")
    for offset, kind in ((-0.2, "original_refs"), (0.2, "method_refs")):
        spread = [reid[m][kind].get("rank1_over_references") for m in METHODS]
        if all(spread):
            mean = np.array([s["mean"] for s in spread])
            low, high = mean - np.array([s["p5"] for s in spread]), np.array([s["p95"] for s in spread]) - mean
            ax.errorbar(x + offset, mean, yerr=[low, high], fmt="o", color="#222", markersize=3, capsize=3,
                        label="mean, 5-95% over reference choices" if offset < 0 else None)
    ax.axhline(chance, color="#b22", linestyle="--", label=f"chance ({chance:.3f})")
    ax.set_xticks(x, METHODS)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Rank-1 identification rate")
    ax.set_title("Re-identification by dlib face recognition")
    ax.legend(fontsize=8, loc="upper center")
    return figure_uri(fig)


def roc_chart(reid: dict[str, Any]) -> str:
    """ROC curves per method, one panel per kind of reference (log FAR axis)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, kind, title in ((axes[0], "original_refs", "queries vs original references"),
                            (axes[1], "method_refs", "queries vs same-method references")):
        for method in METHODS:
            roc = reid[method][kind]["roc"]
            far = np.maximum(np.array(roc["far"]), 1e-4)
            ax.step(far, roc["tar"], where="post", label=method)
        ax.plot([1e-4, 1], [1e-4, 1], color="#999", linestyle=":", label="chance")
        ax.axvline(0.01, color="#b22", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false accept rate")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("true accept rate")
    axes[1].legend(fontsize=8, loc="lower right")
    return figure_uri(fig)


def trace_chart(clip: ClipTrace) -> str:
    """Per-eye gaze and aperture, and the vergence, over time, original against masked."""
    plt = _pyplot()
    names = ["right_gaze_yaw", "left_gaze_yaw", "right_gaze_pitch", "left_gaze_pitch", "right_aperture",
             "left_aperture", "vergence_yaw", "vergence_pitch"]
    fig, axes = plt.subplots(4, 2, figsize=(11, 8.5), sharex=True)
    for ax, name in zip(axes.ravel(), names, strict=True):
        ax.plot(clip.t, clip.signal(name), color="#3b6ea8", linewidth=0.9, label="original")
        ax.plot(clip.t, clip.signal(name, masked=True), color="#e08a2c", linewidth=0.9, label="masked")
        ax.set_title(f"{name} ({SIGNALS[name]})", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{clip.name}: per-eye signals, original vs tracked back from the avatar", fontsize=10)
    fig.tight_layout()
    return figure_uri(fig)


#: Signals of the bias chart, per panel: (title, unit, [(signal, label, colour)], target band half-width).
BIAS_PANELS = (
    ("gaze yaw", "deg", [("right_gaze_yaw", "right eye", "#3b6ea8"), ("left_gaze_yaw", "left eye", "#e08a2c"),
                         ("vergence_yaw", "vergence R - L", "#b22")], 0.75),
    ("gaze pitch", "deg", [("right_gaze_pitch", "right eye", "#3b6ea8"), ("left_gaze_pitch", "left eye", "#e08a2c"),
                           ("vergence_pitch", "vergence R - L", "#b22")], None),
    ("aperture", "eye widths", [("right_aperture", "right eye", "#3b6ea8"),
                                ("left_aperture", "left eye", "#e08a2c")], 0.03),
)


def bias_chart(clips: Sequence[dict[str, Any]]) -> str:
    """Mean signed error (masked minus original) per clip, per eye and for the vergence, with the error's SD.

    A bar of the vergence away from zero is a squint (or a convergence) that the mask made up.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(BIAS_PANELS), 1, figsize=(max(7.0, 0.75 * len(clips) + 2), 8.5), sharex=True)
    x = np.arange(len(clips))
    for ax, (title, unit, series, band) in zip(axes, BIAS_PANELS, strict=True):
        width = 0.8 / len(series)
        for k, (name, label, colour) in enumerate(series):
            bias = [c["signals"][name]["bias"] for c in clips]
            spread = [c["signals"][name]["error_sd"] for c in clips]
            ax.bar(x + (k - (len(series) - 1) / 2) * width, [np.nan if b is None else b for b in bias], width,
                   yerr=[0 if e is None else e for e in spread], color=colour, label=label, capsize=2,
                   error_kw={"elinewidth": 0.8, "ecolor": "#444"})
        if band is not None:
            ax.axhspan(-band, band, color="#2a2", alpha=0.12,
                       label=f"target |bias| (vergence yaw, ±{band})" if unit == "deg" else f"target MAE ±{band}")
        ax.axhline(0, color="#222", linewidth=0.8)
        ax.set_ylabel(f"masked - original ({unit})", fontsize=8)
        ax.set_title(f"{title}: mean signed error per clip (bars), SD of the error (whiskers)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1].set_xticks(x, [c["clip"] for c in clips], rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    return figure_uri(fig)


def bland_altman_chart(clip: ClipTrace) -> str:
    """Error against the original's value, per eye and for the vergence (Bland-Altman style).

    The solid line is the bias, the dashed ones the bias ± 1.96 SD; a slope shows a range squeezed
    or stretched by the mask (for example lids clipped at some opening).
    """
    plt = _pyplot()
    rows = (("right_gaze_yaw", "left_gaze_yaw", "vergence_yaw"),
            ("right_gaze_pitch", "left_gaze_pitch", "vergence_pitch"),
            ("right_aperture", "left_aperture", None))
    fig, axes = plt.subplots(3, 3, figsize=(11, 8.5))
    for row, names in zip(axes, rows, strict=True):
        for ax, name in zip(row, names, strict=True):
            if name is None:
                ax.axis("off")
                continue
            original = np.where(clip.face_original & clip.face_masked, clip.signal(name), np.nan)
            error = clip.signal(name, masked=True) - original
            valid = ~np.isnan(error)
            ax.scatter(original[valid], error[valid], s=3, alpha=0.4, color="#3b6ea8" if "right" in name
                       else "#e08a2c" if "left" in name else "#b22", linewidths=0)
            ax.axhline(0, color="#999", linewidth=0.6)
            if valid.sum() >= 2:
                bias, sd = float(np.mean(error[valid])), float(np.std(error[valid]))
                ax.axhline(bias, color="#222", linewidth=1)
                for edge in (bias - 1.96 * sd, bias + 1.96 * sd):
                    ax.axhline(edge, color="#222", linewidth=0.7, linestyle="--")
                ax.set_title(f"{name}: bias {bias:+.2f}, SD {sd:.2f} {SIGNALS[name]}", fontsize=8)
            else:
                ax.set_title(f"{name}: not measured", fontsize=8)
            ax.set_xlabel(f"original ({SIGNALS[name]})", fontsize=7)
            ax.tick_params(labelsize=7)
        row[0].set_ylabel("masked - original", fontsize=7)
    fig.suptitle(f"{clip.name}: error against the original's value (every compared frame)", fontsize=10)
    fig.tight_layout()
    return figure_uri(fig)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _ok(passed: bool | None) -> str:
    if passed is None:
        return "<td>–</td>"
    return '<td class="pass">pass</td>' if passed else '<td class="fail">FAIL</td>'


def write_human_test(out: Path, gallery: Gallery, sheets: int, seed: int) -> dict[str, Any]:
    """Printable multiple-choice sheets (masked face + original references) and a separate answer key."""
    folder = out / "human_test"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    by_person: dict[str, list[PhotoResult]] = {}
    for query in gallery.queries:
        by_person.setdefault(query.person, []).append(query)
    # Round robin over persons, tracked faces first: a sheet should test the avatar, not the neutral fallback.
    for items in by_person.values():
        items.sort(key=lambda q: (not q.tracked, q.path.name))
    chosen: list[PhotoResult] = []
    depth = 0
    while len(chosen) < sheets and any(depth < len(v) for v in by_person.values()):
        for person in sorted(by_person):
            if depth < len(by_person[person]) and len(chosen) < sheets:
                chosen.append(by_person[person][depth])
        depth += 1
    rng.shuffle(chosen)
    pages, key = [], []
    for number, query in enumerate(chosen, 1):
        others = [p for p in gallery.persons if p != query.person]
        options = [query.person, *rng.sample(others, min(SHEET_OPTIONS - 1, len(others)))]
        rng.shuffle(options)
        answer = LETTERS[options.index(query.person)]
        cells = "".join(
            f'<figure>{img(png_uri(gallery.references[p].thumbs["none"]), "original", f"option {LETTERS[i]}")}'
            f"<figcaption>{LETTERS[i]}</figcaption></figure>" for i, p in enumerate(options))
        none_letter = LETTERS[len(options)]
        pages.append(
            f'<section class="sheet"><h2>Sheet {number}</h2>'
            f'<p>The masked face below belongs to one person. Which of the faces underneath is that person?</p>'
            f'<div class="query">{img(png_uri(query.thumbs["mask"]), "avatar", "masked face")}</div>'
            f'<div class="options">{cells}</div>'
            f'<p class="choices">Circle one: {" &nbsp; ".join(LETTERS[:len(options)])} &nbsp; '
            f'{none_letter} = none of these</p>'
            f"<p>Name: ________________ &nbsp; Confidence (1-5): ____</p></section>")
        key.append({"sheet": number, "answer": answer, "none_of_these": none_letter,
                    "person": query.person, "query_photo": str(query.path),
                    "query_tracked": query.tracked,
                    "options": {LETTERS[i]: p for i, p in enumerate(options)}})
    style = ("body{font-family:sans-serif} .sheet{page-break-after:always;padding:1em} img{width:128px;height:128px}"
             " .options{display:flex;gap:12px;flex-wrap:wrap} figure{margin:0;text-align:center}"
             " .query img{width:192px;height:192px}")
    (folder / "sheets.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Masked face recognition test</title>"
        f"<style>{style}</style></head><body>{''.join(pages)}</body></html>")
    (folder / "answers.json").write_text(json.dumps({"seed": seed, "sheets": key}, indent=1))
    rows = "".join(f"<tr><td>{k['sheet']}</td><td>{k['answer']}</td><td>{html.escape(k['person'])}</td>"
                   f"<td>{html.escape(Path(k['query_photo']).name)}</td></tr>" for k in key)
    (folder / "answers.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Answer key</title></head><body>"
        "<h1>Answer key (keep away from the participants)</h1><table border='1' cellpadding='4'>"
        f"<tr><th>sheet</th><th>answer</th><th>person</th><th>query photo</th></tr>{rows}</table></body></html>")
    return {"folder": "human_test", "sheets_file": "human_test/sheets.html",
            "answers_files": ["human_test/answers.json", "human_test/answers.html"], "sheets": len(key),
            "options_per_sheet": min(SHEET_OPTIONS, len(gallery.persons)), "seed": seed,
            "chance": 1.0 / (min(SHEET_OPTIONS, len(gallery.persons)) + 1) if key else None}


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1em} th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left} .pass{color:#176a17} .fail{color:#b00;font-weight:bold}
h2{border-bottom:2px solid #3b6ea8;padding-bottom:2px} .note{color:#555;font-size:0.92em}
img{max-width:100%} .banner{padding:6px 10px;border:1px solid #176a17;background:#eef7ee}
.banner.warn{border-color:#b00;background:#fbeaea} .matrix td{font-size:0.85em}
"""


def _spread(stats: dict[str, float] | None) -> str:
    if not stats:
        return "–"
    return f"{_fmt(stats['mean'])} [{_fmt(stats['p5'])}, {_fmt(stats['p95'])}]"


def _reid_section(report: dict[str, Any], gallery: Gallery, images: dict[str, str], include_originals: bool) -> str:
    reid = report["reidentification"]
    labels = reid["person_labels"]
    methods = reid["methods"]
    rows = "".join(
        f"<tr><td>{m} – {html.escape(METHOD_LABELS[m])}</td>"
        f"<td>{_fmt(methods[m]['original_refs']['rank1'])}</td><td>{_fmt(methods[m]['method_refs']['rank1'])}</td>"
        f"<td>{_fmt(methods[m]['original_refs']['tar_at_far_0.01'])}</td>"
        f"<td>{_fmt(methods[m]['method_refs']['tar_at_far_0.01'])}</td>"
        f"<td>{_fmt(methods[m]['original_refs']['auc'])}</td><td>{_fmt(methods[m]['method_refs']['auc'])}</td>"
        f"<td>{methods[m]['queries_without_descriptor']}</td></tr>" for m in METHODS)
    spread_rows = "".join(
        f"<tr><td>{m}</td>" + "".join(f"<td>{_spread(methods[m][kind].get('rank1_over_references'))}</td>"
                                      for kind in ("original_refs", "method_refs")) + "</tr>" for m in METHODS)
    photos = reid["photos"]
    per_person = "".join(
        f"<tr><td>{labels[p]}</td><td>{reid['queries_per_person'].get(p, 0)}</td>"
        + "".join(f"<td>{_fmt(methods[m]['original_refs']['rank1_per_person'][p], 2)}</td>" for m in METHODS)
        + "".join(f"<td>{_fmt(methods[m]['method_refs']['rank1_per_person'][p], 2)}</td>"
                  for m in METHODS if m != "none")
        + "</tr>" for p in gallery.persons)
    head = "".join(f"<th>{m}<br>orig refs</th>" for m in METHODS) + "".join(
        f"<th>{m}<br>{m} refs</th>" for m in METHODS if m != "none")
    originals = ""
    if include_originals and "originals" in images:
        originals = ("<h3>What each method looks like (unmasked faces shown: --include-originals)</h3>"
                     f"<p>Columns: {', '.join(METHODS)}.</p>{images['originals']}")
    return f"""
<h2>1. Re-identification by face recognition</h2>
<p>Attacker: dlib's face-recognition ResNet (128-d descriptors, 68-point alignment), given the face location found
on the <em>original</em> photo (dlib HOG detector; our BlazeFace box where HOG finds none), so hiding the face from a
detector earns no credit. Per person the first usable photo (sorted by name) is the reference, the others are
queries. Rank-1: fraction of a person's queries whose nearest reference is theirs, averaged over persons (a query
without a descriptor is a miss). Chance = 1 / {len(gallery.persons)} persons = <b>{_fmt(reid['chance'])}</b>.</p>
<p class="note">Photos: {photos['total']} found, {photos['used']} used ({len(gallery.queries)} queries),
{photos['skipped']} skipped (no face for dlib nor our detector), {photos['box_from_blazeface']} located by our
detector only, {photos['not_tracked_by_mask']} where our tracker found no face (the neutral avatar was output,
as the product does).</p>
<table><tr><th>method</th><th>Rank-1<br>vs original refs</th><th>Rank-1<br>vs method refs</th>
<th>TAR@FAR 0.01<br>original refs</th><th>TAR@FAR 0.01<br>method refs</th><th>ROC AUC<br>original refs</th>
<th>ROC AUC<br>method refs</th><th>queries without<br>descriptor</th></tr>{rows}</table>
<h3>How much the choice of reference photo matters</h3>
<p class="note">With few persons and photos, Rank-1 moves with which photo happens to be each person's reference.
Below: Rank-1 over {REFERENCE_DRAWS} random choices of reference photo per person (mean and 5–95% range). The
<em>control</em> row is the avatar with every movement neutral, drawn only at the face's place and size: what it
links comes from where and how large the faces are in the photos (for example two photo sources of different
resolution), and no mask that keeps the face where it was can link less.</p>
<table><tr><th>method</th><th>Rank-1 vs original refs<br>mean [5%, 95%]</th>
<th>Rank-1 vs method refs<br>mean [5%, 95%]</th></tr>{spread_rows}</table>
{images['rank1']}
{images['roc']}
<h3>Masked photos as the attacker saw them (avatar only)</h3>{images['masked_photos']}
{originals}
<h3>Rank-1 per person</h3>
<p class="note">Persons are labelled P01… here; report.json maps labels to folder names.</p>
<table><tr><th>person</th><th>queries</th>{head}</tr>{per_person}</table>
"""


def _pair(stats: dict[str, Any], digits: int) -> str:
    """'MAE / bias' of one signal."""
    bias = stats["bias"]
    return f"{_fmt(stats['mae'], digits)} / {'–' if bias is None else f'{bias:+.{digits}f}'}"


#: Columns of the per-clip error table: (heading, signal, digits).
ERROR_COLUMNS = (
    ("vergence yaw R−L", "vergence_yaw", 2), ("vergence pitch R−L", "vergence_pitch", 2),
    ("gaze yaw R", "right_gaze_yaw", 2), ("gaze yaw L", "left_gaze_yaw", 2),
    ("gaze pitch R", "right_gaze_pitch", 2), ("gaze pitch L", "left_gaze_pitch", 2),
    ("aperture R", "right_aperture", 3), ("aperture L", "left_aperture", 3),
    ("head yaw", "head_yaw", 2), ("head pitch", "head_pitch", 2), ("head roll", "head_roll", 2),
)


def error_table(clips: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-clip table: MAE / bias of every signal, r where it applies, coverage."""
    header = ["clip", "frames", *(f"{h} MAE / bias" for h, _, _ in ERROR_COLUMNS),
              "r (where the original varies)", "gaze measured R / L", "face found"]
    rows = []
    for clip in clips:
        signals = clip["signals"]
        r = ", ".join(f"{name.replace('_gaze', '').replace('_', ' ')} {signals[name]['pearson_r']:.2f}"
                      for name in signals if signals[name]["pearson_r"] is not None
                      and signals[name]["target_r"] is not None) or "–"
        measured = " / ".join(_fmt(clip["eyes"][e]["gaze"]["measured_both"], 2) for e in EYES)
        rows.append([clip["clip"], str(clip["frames"]), *(_pair(signals[s], d) for _, s, d in ERROR_COLUMNS), r,
                     measured, _fmt(clip["face_found"]["masked_where_original"], 3)])
    return header, rows


def movement_table(bands: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the vergence error by what the eyes were doing (:func:`~.fidelity.vergence_by_movement`)."""
    header = ["frames of", "frames", "MAE (deg)", "bias (deg)", "95th percentile of |error| (deg)"]
    return header, [[b["band"], str(b["frames"]), _fmt(b["mae"], 2), _fmt(b["bias"], 2), _fmt(b["p95"], 2)]
                    for b in bands]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _clip_section(clip: dict[str, Any], images: dict[str, str]) -> str:
    """Everything about one clip: its targets, face and eye agreement, errors per signal, plots."""
    name = clip["clip"]
    found = clip["face_found"]
    signal_rows = []
    for signal, v in clip["signals"].items():
        unit = html.escape(v["unit"])
        digits = 3 if v["unit"] == "eye widths" else 2
        r = _fmt(v["pearson_r"]) if v["r_applies"] else f"says nothing (SD of the original &lt; {v['r_min_sd']:g})"
        bias = v["bias"]
        signal_rows.append(
            f"<tr><td>{signal}</td><td>{v['frames']}</td><td>{_fmt(v['coverage'], 3)}</td>"
            f"<td>{_fmt(v['mae'], digits)} {unit}</td><td>{'–' if bias is None else f'{bias:+.{digits}f}'}</td>"
            f"<td>{_fmt(v['error_sd'], digits)}</td><td>{_fmt(v['original_sd'], digits)}</td>"
            f"<td>{_fmt(v['masked_sd'], digits)}</td><td>{r}</td></tr>")
    eye_rows = "".join(
        f"<tr><td>{eye} {part}</td><td>{_fmt(e['original'])}</td><td>{_fmt(e['masked_where_original'])}</td>"
        f"<td>{_fmt(e['agreement'])}</td><td>{e['masked_only']}</td><td>{_fmt(e['measured_both'])}</td></tr>"
        for eye in EYES for part, e in clip["eyes"][eye].items())
    blinks = "".join(
        f"<tr><td>{eye}</td><td>{b['original']}</td><td>{b['masked']}</td>{_ok(b['pass'])}</tr>"
        for eye, b in clip["blinks"].items())
    targets = "".join(
        f"<tr><td>{html.escape(c['measure'])}</td><td>{html.escape(c['target'])}</td>"
        f"<td>{html.escape(c['value'])}</td>{_ok(c['pass'])}</tr>" for c in clip["targets"])
    return f"""
<h3>{html.escape(name)} – {clip['frames']} frames, {clip['duration_s']:.1f} s at {clip['fps']:.1f} fps</h3>
<table><tr><th>target</th><th></th><th>value</th><th></th></tr>{targets}</table>
<table><tr><th>face present</th><th>share of frames</th></tr>
<tr><td>original</td><td>{_fmt(found['original'])}</td></tr>
<tr><td>masked, where the original had one (target ≥ {found['target']})</td>
<td>{_fmt(found['masked_where_original'])}</td>{_ok(found['pass'])}</tr>
<tr><td>agreement (the neutral avatar shown without a face counts as no face)</td><td>{_fmt(found['agreement'])}</td>
</tr><tr><td>frames without a face in the original where the re-tracker found the neutral avatar (not counted)</td>
<td>{found['neutral_avatar_frames']}</td></tr></table>
<table><tr><th>eye measurable</th><th>original<br>(of its face frames)</th><th>masked, where<br>the original was</th>
<th>agreement<br>(frames with both faces)</th><th>masked only<br>(frames)</th><th>both<br>(of face frames)</th></tr>
{eye_rows}</table>
<table><tr><th>signal</th><th>frames<br>compared</th><th>of face<br>frames</th><th>MAE</th>
<th>bias<br>masked − original</th><th>SD of<br>the error</th>
<th>SD<br>original</th><th>SD<br>masked</th><th>Pearson r</th></tr>{''.join(signal_rows)}
</table>
<table><tr><th>blinks</th><th>original</th><th>masked</th><th>within 1</th></tr>{blinks}</table>
{images.get(f'trace:{name}', '')}
{images.get(f'agreement:{name}', '')}
<p class="note">Masked frames (avatar only):</p>{images.get(f'frames:{name}', '')}"""


def _fidelity_section(report: dict[str, Any], images: dict[str, str]) -> str:
    fidelity = report["fidelity"]
    parts = ["<h2>2. Fidelity: do eye, lid and head movements survive masking?</h2>",
             "<p>Each clip is tracked (as <code>maskproxy track</code> does), masked, and the masked frames tracked "
             "again by a fresh tracker. Errors are in the signals' own units, degrees or eye widths: the mean "
             "absolute error (MAE) and the mean signed error (bias, masked minus original) over frames where the "
             "original has a face and the eye is measurable in both traces (a null field is an eye that could not be "
             "measured). The <b>vergence</b> is right minus left gaze: its bias is a squint (or a convergence) the "
             "mask made up. Pearson r is given only where the original's signal varies (SD ≥ 2° for gaze and head, "
             "≥ 0.03 for apertures); elsewhere r says nothing. Where the original has no face the pipeline shows "
             "the neutral avatar, which is not counted as a found face.</p>"]
    for key, _, change in CLIP_SETS:
        title = f"The same clips {change}" if change else "Errors per clip"
        clips = fidelity.get(key)
        if not clips:
            continue
        parts.append(f"<h3>{title}: MAE / bias</h3>{_table(*error_table(clips))}")
        parts.append("<p class='note'>Bias per eye and for the vergence, per clip: a vergence yaw bar outside the "
                     f"green band is a false squint.</p>{images.get(f'bias:{key}', '')}")
        bands = fidelity.get("vergence_by_movement", {}).get(key)
        if bands:
            parts.append("<p class='note'>Vergence yaw (R − L) error over these clips' frames together, by what the "
                         "original's eyes were doing (speed of their mean horizontal gaze; how far to the side the "
                         "further eye looked):</p>" + _table(*movement_table(bands)))
    for key, _, _ in CLIP_SETS:
        for clip in fidelity.get(key, []):
            parts.append(_clip_section(clip, images))
    return "".join(parts)


def _target_matrix(checks: list[dict[str, Any]]) -> str:
    """Clips down, measures across; each cell the value, coloured met or missed."""
    measures = list(dict.fromkeys(c["measure"] for c in checks))
    targets = {c["measure"]: c["target"] for c in checks}
    clips = list(dict.fromkeys(c["clip"] for c in checks))
    cell = {(c["clip"], c["measure"]): c for c in checks}
    head = "".join(f"<th>{html.escape(m)}<br><small>{html.escape(targets[m])}</small></th>" for m in measures)
    rows = []
    for clip in clips:
        cells = "".join(
            f"<td class=\"{'pass' if cell[(clip, m)]['pass'] else 'fail'}\">{html.escape(cell[(clip, m)]['value'])}"
            "</td>" if (clip, m) in cell else "<td>–</td>" for m in measures)
        met = sum(cell[(clip, m)]["pass"] for m in measures if (clip, m) in cell)
        rows.append(f"<tr><td>{html.escape(clip)}</td><td>{met}/{len(measures)}</td>{cells}</tr>")
    return f"<table class='matrix'><tr><th>clip</th><th>met</th>{head}</tr>{''.join(rows)}</table>"


def _summary(report: dict[str, Any]) -> str:
    targets = report["targets"]
    parts = ["<h2>Summary against the project's targets</h2>"]
    reid = [c for c in targets if c["set"] == "reidentification"]
    if reid:
        rows = "".join(f"<tr><td>{html.escape(c['check'])}</td><td>{html.escape(c['value'])}</td>{_ok(c['pass'])}"
                       "</tr>" for c in reid)
        parts.append(f"<table><tr><th>check</th><th>value</th><th></th></tr>{rows}</table>")
    for _, kind, change in CLIP_SETS:
        title = f"The same, clips {change}" if change else "Fidelity targets per clip"
        checks = [c for c in targets if c["set"] == kind]
        if checks:
            met = sum(c["pass"] for c in checks)
            parts.append(f"<h3>{title}: {met} of {len(checks)} met</h3>{_target_matrix(checks)}")
    return "".join(parts)


def _originals_banner(report: dict[str, Any]) -> str:
    """The first thing in the report: were unmasked faces written, and where."""
    written = report.get("originals_written", [])
    if not written:
        return ("<p class='banner'>No unmasked face was written: this report shows only plots and avatar images, "
                "and no human-test sheets were made.</p>")
    where = "; ".join(f"<code>{html.escape(o['file'])}</code> ({html.escape(o['why'])})" for o in written)
    return (f"<p class='banner warn'><b>Unmasked faces were written:</b> {where}. Handle these files as personal "
            "data.</p>")


def write_html(path: Path, report: dict[str, Any], gallery: Gallery | None, images: dict[str, str],
               include_originals: bool) -> None:
    """The self-contained report (every image inline)."""
    body = [f"<h1>maskproxy audit</h1>{_originals_banner(report)}"
            f"<p>{html.escape(report['created'])} · maskproxy {report['version']} · "
            f"{report['timing_s']['total']:.0f} s. Every number is also in <code>report.json</code>.</p>",
            _summary(report)]
    if gallery is not None and "reidentification" in report:
        body.append(_reid_section(report, gallery, images, include_originals))
    if "fidelity" in report:
        body.append(_fidelity_section(report, images))
    if "human_test" in report:
        human = report["human_test"]
        body.append(
            f"<h2>3. Human test kit</h2><p>{human['sheets']} printable multiple-choice sheets are in "
            f"<code>{human['sheets_file']}</code>: each shows one masked face and {human['options_per_sheet']} "
            "original reference faces (one of them the right person) plus “none of these”. <b>The sheets contain "
            "unmasked faces by design</b>; handle them as personal data. The answer key is kept separately in "
            f"<code>{'</code> and <code>'.join(human['answers_files'])}</code>. Chance per sheet: "
            f"{_fmt(human['chance'])}.</p>")
    path.write_text(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>maskproxy audit</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
