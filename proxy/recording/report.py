"""``maskproxy report``: a self-contained clinical report of a recording, from its stored parameters alone.

The source is a recording (its folder, or its id under ``--recordings-dir``;
sealed files need the recordings key from ``MASKPROXY_RECORDINGS_KEY`` or
``--key-file``) or a video masked by ``maskproxy mask`` with the parameters it
wrote with ``--params-out`` (``--params``, by default the video's name with
``.jsonl``), so clinics can bring masked videos from elsewhere into the same
report. The report holds a few frames of the masked video, each eye's traces
over the whole consult, the eye-exam numbers :mod:`proxy.exam` computes from
the parameters (blinks, lids and MRD, nystagmus window by window, deviation
where the consult calibrated the eyes), the guided tests' results and the
doctor's marks. Everything is inline (PNG frames, SVG plots), one HTML file
to archive with the record. Each plotted line is an SVG group whose id names
the signal (``trace-right_gaze_yaw``), drawn point for point from the stored
samples (long consults keep each screen column's lowest and highest sample,
so no saccade or nystagmus beat is smoothed away). The plots need matplotlib
(the ``audit`` extra); without it the command says so in one line and exits
with status 2.
"""

from __future__ import annotations

import argparse
import base64
import html
import importlib
import io
import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from proxy import __version__
from proxy.exam import measures
from proxy.exam.calibration import Calibration
from proxy.exam.traces import COLUMNS, EYES, Traces
from proxy.files.media import InputError
from proxy.recording.metadata import METADATA, RecordingError, check_id, read_metadata
from proxy.recording.sealed import SealedFileError, parse_key
from proxy.recording.store import NotFound, OpenedFile, on_disk, open_file

EXTRA_HINT = "pip install 'maskproxy[audit]'"
#: Samples per plotted line at most; longer series keep each bucket's lowest and highest sample.
MAX_POINTS = 3000
#: Nystagmus is looked for in windows of this length, this far apart (s).
NYSTAGMUS_STEP_S = 2.0
#: Masked frames shown.
FRAMES = 6
#: Plot panels: (title, unit, [(signal, label, colour)]).
PANELS = (
    ("gaze yaw (+ towards the picture's right)", "deg",
     [("right_gaze_yaw", "right eye", "#3b6ea8"), ("left_gaze_yaw", "left eye", "#e08a2c")]),
    ("gaze pitch (+ up)", "deg",
     [("right_gaze_pitch", "right eye", "#3b6ea8"), ("left_gaze_pitch", "left eye", "#e08a2c")]),
    ("vergence, right minus left (uncalibrated tracker angles)", "deg",
     [("vergence_yaw", "yaw R - L (> 0 converging)", "#b22"), ("vergence_pitch", "pitch R - L (> 0 right higher)",
                                                                 "#7a3")]),
    ("lid aperture", "eye widths",
     [("right_aperture", "right eye", "#3b6ea8"), ("left_aperture", "left eye", "#e08a2c")]),
    ("MRD1 (upper lid margin to iris centre)", "mm",
     [("right_mrd1", "right eye", "#3b6ea8"), ("left_mrd1", "left eye", "#e08a2c")]),
    ("head pose", "deg",
     [("head_yaw", "yaw", "#555"), ("head_pitch", "pitch", "#999"), ("head_roll", "roll", "#c9c")]),
)
#: What each signal is, from the parameter columns: a field name, or (a, b) for a minus b.
SIGNALS: dict[str, str | tuple[str, str]] = {
    **{name: name for _, _, series in PANELS for name, _, _ in series if not name.startswith("vergence")},
    "vergence_yaw": ("right_gaze_yaw", "left_gaze_yaw"),
    "vergence_pitch": ("right_gaze_pitch", "left_gaze_pitch"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``maskproxy report``."""
    parser.add_argument("source", help="a recording folder, a recording id (in --recordings-dir), or a video "
                        "masked by 'maskproxy mask' (its parameters from --params)")
    parser.add_argument("--out", type=Path, required=True, metavar="REPORT.html", help="the report to write")
    parser.add_argument("--recordings-dir", type=Path, default=None, metavar="DIR",
                        help="where recording ids are looked up [MASKPROXY_RECORDINGS_DIR, default ./recordings]")
    parser.add_argument("--key-file", type=Path, default=None, metavar="FILE",
                        help="file holding the recordings key of encrypted recordings [MASKPROXY_RECORDINGS_KEY]")
    parser.add_argument("--params", type=Path, default=None, metavar="FILE.jsonl",
                        help="with a masked video: the parameters 'maskproxy mask --params-out' wrote "
                        "(default: the video's name with .jsonl)")
    parser.add_argument("--frames", type=int, default=FRAMES, metavar="N", help="masked frames shown (default 6)")


# ---- reading the source ------------------------------------------------------------------------


@dataclass
class Source:
    """What the report is made from: parameter lines, events, metadata and a way to open the masked video."""

    title: str
    kind: str  # "recording" or "masked video"
    params: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    unreadable_lines: int = 0
    folder: Path | None = None
    key: bytes | None = None
    video: Path | None = None

    @contextmanager
    def open_video(self) -> Iterator[Any]:
        """The masked video as something PyAV opens (a path, or a decrypting file object); None if absent."""
        if self.video is not None:
            yield str(self.video)
            return
        if self.folder is None or on_disk(self.folder, "video.webm") is None:
            yield None
            return
        with open_file(self.folder, "video.webm", self.key, self.metadata.get("complete", False)) as opened:
            yield opened


def read_lines(opened: OpenedFile | io.TextIOBase | Any) -> tuple[list[dict[str, Any]], int]:
    """JSON objects, one a line; lines that are not (a torn last line) are counted, not fatal."""
    out, bad = [], 0
    for raw in opened.read().splitlines():
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            bad += 1
            continue
        if isinstance(value, dict):
            out.append(value)
        else:
            bad += 1
    return out, bad


def _key(args: argparse.Namespace) -> bytes | None:
    try:
        if args.key_file is not None:
            return parse_key(Path(args.key_file).read_text())
        if os.environ.get("MASKPROXY_RECORDINGS_KEY"):
            return parse_key(os.environ["MASKPROXY_RECORDINGS_KEY"])
    except OSError as exc:
        raise InputError(f"{args.key_file}: {exc.strerror}") from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return None


def load_recording(folder: Path, key: bytes | None) -> Source:
    metadata = read_metadata(folder)
    if metadata.get("state") == "recording":
        metadata.update(complete=False, reason="interrupted: the proxy stopped while recording (or it still runs)")
    complete = bool(metadata.get("complete"))
    params: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    bad = 0
    for name, into in (("params.jsonl", params), ("events.jsonl", events)):
        try:
            with open_file(folder, name, key, complete) as opened:
                lines, skipped = read_lines(opened)
        except NotFound:
            continue
        except SealedFileError as exc:
            raise InputError(f"{folder / name}: {exc}") from None
        into.extend(lines)
        bad += skipped
    return Source(f"recording {metadata.get('id', folder.name)}", "recording", params, events, metadata, bad,
                  folder=folder, key=key)


def load_masked_video(video: Path, params_path: Path | None) -> Source:
    params_path = params_path or video.with_suffix(".jsonl")
    if not params_path.is_file():
        raise InputError(f"{params_path}: no such parameters file (give the --params-out file of "
                         "'maskproxy mask' with --params)")
    with open(params_path) as file:
        params, bad = read_lines(file)
    return Source(f"masked video {video.name}", "masked video", params, unreadable_lines=bad, video=video,
                  metadata={"source": video.name, "parameters": params_path.name})


def load_source(args: argparse.Namespace) -> Source:
    """The recording or masked video named on the command line."""
    source = Path(args.source)
    key = _key(args)
    if source.is_dir():
        if not (source / METADATA).is_file():
            raise InputError(f"{source}: not a recording folder (no {METADATA})")
        return load_recording(source, key)
    if source.is_file():
        return load_masked_video(source, args.params)
    try:
        check_id(args.source)
    except RecordingError:
        raise InputError(f"{args.source}: no such recording folder, recording id or video") from None
    root = args.recordings_dir or Path(os.environ.get("MASKPROXY_RECORDINGS_DIR", "recordings"))
    folder = root / args.source
    if not (folder / METADATA).is_file():
        raise InputError(f"{args.source}: no such recording in {root}")
    return load_recording(folder, key)


# ---- from parameters to numbers ----------------------------------------------------------------


def times(lines: list[dict[str, Any]]) -> np.ndarray:
    """Each line's time in the video: ``video_t`` of a recording, ``t`` of a masked file; NaN if neither."""
    def time_of(line: dict[str, Any]) -> float:
        value = line.get("video_t", line.get("t"))
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan

    return np.array([time_of(line) for line in lines], dtype=float)


def column(lines: list[dict[str, Any]], key: str) -> np.ndarray:
    """One stored field over the lines: NaN where there was no face or the field is missing, null or not finite
    (an eye that could not be measured stays a gap, never a neutral value)."""
    def value(line: dict[str, Any]) -> float:
        raw = line.get(key)
        if not line.get("face") or isinstance(raw, bool) or not isinstance(raw, int | float):
            return math.nan
        return float(raw) if math.isfinite(raw) else math.nan

    return np.array([value(line) for line in lines], dtype=float)


def to_traces(lines: list[dict[str, Any]]) -> tuple[Traces, list[dict[str, Any]], int]:
    """Traces on the video's clock, the lines used (in time order), and how many lines had no time."""
    t = times(lines)
    valid = np.flatnonzero(np.isfinite(t))
    used = [lines[i] for i in valid[np.argsort(t[valid], kind="stable")]]
    face = np.array([1.0 if line.get("face") else 0.0 for line in used])
    traces = Traces.from_arrays(times(used), face=face, **{name: column(used, name) for name in COLUMNS[2:]})
    return traces, used, len(lines) - len(used)


def signal(lines: list[dict[str, Any]], name: str) -> np.ndarray:
    """One plotted signal from the stored lines (NaN where the eye or the face was not measured)."""
    spec = SIGNALS[name]
    if isinstance(spec, tuple):
        return column(lines, spec[0]) - column(lines, spec[1])
    return column(lines, spec)


def decimate(t: np.ndarray, values: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``limit`` samples: all of them, or each bucket's lowest and highest, in time order.

    Every point kept is a stored sample; gaps (NaN) stay gaps.
    """
    if t.size <= limit:
        return t, values
    keep: list[int] = []
    for bucket in np.array_split(np.arange(t.size), limit // 2):
        finite = bucket[np.isfinite(values[bucket])]
        if not finite.size:
            keep.append(int(bucket[0]))
            continue
        low, high = int(finite[np.argmin(values[finite])]), int(finite[np.argmax(values[finite])])
        keep.extend(sorted({low, high}))
        if finite.size < bucket.size:  # keep the gap visible
            keep.append(int(bucket[~np.isfinite(values[bucket])][0]))
    index = np.array(sorted(set(keep)))
    return t[index], values[index]


def nystagmus_windows(traces: Traces) -> list[dict[str, Any]]:
    """:func:`proxy.exam.measures.nystagmus` over every window of the consult; the windows where it was found."""
    found = []
    if len(traces) < 2:
        return found
    window = measures.NYSTAGMUS_WINDOW_S
    end = traces.t[0] + window
    while end <= traces.t[-1] + 1e-9:
        for result in measures.nystagmus(traces.between(end - window, end + 1e-9), window):
            if result.detected:
                found.append({"start": round(end - window, 2), "end": round(end, 2)} | result.to_json())
        end += NYSTAGMUS_STEP_S
    return found


def episodes(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Overlapping windows of one eye joined into episodes, with their median frequency and amplitude."""
    out: list[dict[str, Any]] = []
    for eye in EYES:
        current: list[dict[str, Any]] = []
        for window in [w for w in windows if w["eye"] == eye] + [None]:  # type: ignore[list-item]
            if window is not None and current and window["start"] <= current[-1]["end"]:
                current.append(window)
                continue
            if current:
                out.append({
                    "eye": eye, "start": current[0]["start"], "end": current[-1]["end"], "windows": len(current),
                    "frequency_hz": round(float(np.median([w["frequency_hz"] for w in current])), 2),
                    "amplitude_deg": round(float(np.median([w["amplitude_deg"] for w in current])), 2),
                    "direction": max({w["direction"] for w in current},
                                     key=[w["direction"] for w in current].count),
                    "beating": max({w["beating"] for w in current}, key=[w["beating"] for w in current].count),
                    "conjugate": any(w["conjugate"] for w in current)})
            current = [window] if window is not None else []
    return sorted(out, key=lambda e: e["start"])


def exam_numbers(traces: Traces, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The eye-exam numbers of the whole consult, from the parameters (and the consult's own test results)."""
    span = traces.span()
    windows = nystagmus_windows(traces)
    both = np.isfinite(traces.gaze("right")).all(axis=1) & np.isfinite(traces.gaze("left")).all(axis=1)
    difference = traces.gaze("right")[both] - traces.gaze("left")[both]
    measured = [e["data"] for e in events if e.get("kind") == "exam_result" and isinstance(e.get("data"), dict)]
    deviations = [r for test in measured for r in test.get("results", []) if isinstance(r, dict)
                  and r.get("measure") in ("deviation", "gaze_position")]
    return {
        "duration_s": round(span, 2),
        "frames": len(traces),
        "face_frames": int(np.nansum(traces["face"])) if len(traces) else 0,
        "blinks": [r.to_json() for r in measures.blinks(traces)] if len(traces) > 1 else [],
        "lids": [r.to_json() for r in measures.lids(traces, max(span, measures.LID_WINDOW_S))]
        if len(traces) > 1 else [],
        "nystagmus_windows": windows,
        "nystagmus_episodes": episodes(windows),
        "deviation": measures.deviation(traces, Calibration()).to_json() if len(traces) > 1 else None,
        "deviation_from_tests": deviations,
        "uncalibrated_r_minus_l_deg": [round(float(v), 2) for v in np.median(difference, axis=0)]
        if both.sum() >= 10 else None,
    }


# ---- pictures ----------------------------------------------------------------------------------


def masked_frames(source: Source, count: int) -> list[tuple[float, np.ndarray]]:
    """About ``count`` keyframes of the masked video spread over it, (time, RGB), at most 320 pixels wide."""
    if count <= 0:
        return []
    with source.open_video() as video:
        if video is None:
            return []
        picked: list[tuple[float, np.ndarray]] = []
        try:
            with av.open(video) as container:
                stream = container.streams.video[0]
                stream.codec_context.skip_frame = "NONKEY"
                duration = float(times(source.params)[-1]) if source.params else None
                targets = list(np.linspace(0, duration, count, endpoint=False)) if duration else [0.0] * count
                for frame in container.decode(stream):
                    if not targets:
                        break
                    if frame.pts is None:
                        continue
                    t = float(frame.pts * stream.time_base)
                    if t + 1e-6 < targets[0]:
                        continue
                    while targets and targets[0] <= t + 1e-6:
                        targets.pop(0)
                    scale = min(1.0, 320 / frame.width)
                    small = frame.reformat(width=int(frame.width * scale) // 2 * 2,
                                           height=int(frame.height * scale) // 2 * 2, format="rgb24")
                    picked.append((t, small.to_ndarray()))
        except (av.error.FFmpegError, ValueError, OSError):
            pass  # a torn video still gives the frames before the tear
        return picked


def _svg_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def trace_chart(lines: list[dict[str, Any]], marks: list[tuple[float, str]]) -> str:
    """Every panel of :data:`PANELS` over the whole consult, marks as numbered lines; an SVG data: URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = times(lines)
    with matplotlib.rc_context({"path.simplify": False, "svg.hashsalt": "maskproxy", "svg.fonttype": "none"}):
        fig, axes = plt.subplots(len(PANELS), 1, figsize=(11, 2.1 * len(PANELS)), sharex=True)
        for ax, (title, unit, series) in zip(axes, PANELS, strict=True):
            for name, label, colour in series:
                x, y = decimate(t, signal(lines, name))
                (line,) = ax.plot(x, y, color=colour, linewidth=0.8, label=label)
                line.set_gid(f"trace-{name}")
            for number, (at, _) in enumerate(marks, start=1):
                ax.axvline(at, color="#b22", linewidth=0.7, linestyle="--")
                if ax is axes[0]:
                    ax.annotate(str(number), (at, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                                color="#b22", ha="center", va="bottom")
            ax.set_ylabel(unit, fontsize=8)
            ax.set_title(title, fontsize=9, loc="left")
            ax.tick_params(labelsize=8)
            ax.legend(fontsize=7, loc="upper right", ncol=3)
        axes[-1].set_xlabel("time in the recording (s)", fontsize=8)
        fig.tight_layout()
        return _svg_uri(fig)


# ---- HTML --------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _clock(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "–"
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _header(source: Source, numbers: dict[str, Any]) -> str:
    meta = source.metadata
    rows = [["source", html.escape(source.title)]]
    if source.kind == "recording":
        tracks = meta.get("tracks", {}).get("video.webm", {})
        rows += [["consult", _fmt(meta.get("consult"))], ["started", _fmt(meta.get("started"))],
                 ["ended", _fmt(meta.get("ended"))], ["encrypted at rest", _fmt(meta.get("encrypted"))],
                 ["made by", _fmt((meta.get("software") or {}).get("version"))],
                 ["frames recorded / dropped", f"{_fmt(tracks.get('frames_written'))} / {_fmt(tracks.get('dropped'))}"],
                 ["settings", html.escape(", ".join(f"{k}={v}" for k, v in sorted(meta.get("settings", {}).items())))]]
    else:
        rows += [["parameters", _fmt(meta.get("parameters"))]]
    rows += [["parameter frames / with a face", f"{numbers['frames']} / {numbers['face_frames']}"],
             ["duration", f"{_clock(numbers['duration_s'])} (m:s)"]]
    if source.unreadable_lines:
        rows.append(["unreadable lines", f"{source.unreadable_lines} (a line cut off by a crash, or damaged)"])
    banner = ""
    if source.kind == "recording" and not meta.get("complete"):
        banner = (f"<p class='banner warn'><b>Incomplete recording:</b> {_fmt(meta.get('reason'))}. Everything "
                  "up to where it stopped is shown.</p>")
    return banner + _table([], rows)


def _result_cells(result: dict[str, Any]) -> str:
    units = result.get("units") or {}
    parts = []
    for name, value in result.items():
        if name in ("measure", "eye", "units", "caveat") or isinstance(value, dict | list):
            continue
        unit = f" {html.escape(str(units[name]))}" if name in units and value is not None else ""
        parts.append(f"{html.escape(name)}: {_fmt(value)}{unit}")
    return "; ".join(parts)


def _caveat(result: dict[str, Any]) -> str:
    """A result's caveat without the webcam sentence every caveat starts with (the section says it once)."""
    return html.escape(str(result.get("caveat", "")).removeprefix(measures.WEBCAM))


def _exam_section(numbers: dict[str, Any]) -> str:
    out = ["<h2>Eye examination, from the parameters of the whole recording</h2>",
           f"<p class='note'>{html.escape(measures.WEBCAM)}</p>"]
    blinks = numbers["blinks"]
    if blinks:
        out.append("<h3>Blinks</h3>" + _table(
            ["eye", "blinks", "per minute", "complete", "incomplete", "unclassified"],
            [[b["eye"], _fmt(b["count"]), _fmt(b["rate_per_min"], 1), _fmt(b["complete"]), _fmt(b["incomplete"]),
              _fmt(b["unclassified"])] for b in blinks]) + f"<p class='note'>{_caveat(blinks[0])}</p>")
    lids = numbers["lids"]
    if lids:
        out.append("<h3>Lids (medians over open-eye frames)</h3>" + _table(
            ["eye", "MRD1 (mm)", "MRD2 (mm)", "fissure (mm)", "ptosis", "note"],
            [[r["eye"], _fmt(r["mrd1_mm"]), _fmt(r["mrd2_mm"]), _fmt(r["fissure_mm"]), _fmt(r["ptosis"]),
              _fmt(r["reason"])] for r in lids]) + f"<p class='note'>{_caveat(lids[0])}</p>")
    found = numbers["nystagmus_episodes"]
    out.append("<h3>Nystagmus</h3>")
    if found:
        out.append(_table(["eye", "from", "to", "frequency (Hz)", "amplitude (deg p-p)", "direction", "beating",
                           "conjugate"],
                          [[e["eye"], _clock(e["start"]), _clock(e["end"]), _fmt(e["frequency_hz"]),
                            _fmt(e["amplitude_deg"]), _fmt(e["direction"]), _fmt(e["beating"]), _fmt(e["conjugate"])]
                           for e in found]))
    else:
        out.append("<p>None found in any 4 s window.</p>")
    out.append(f"<p class='note'>Looked for in every {measures.NYSTAGMUS_WINDOW_S:g} s window, "
               f"{NYSTAGMUS_STEP_S:g} s apart. {html.escape(measures.NystagmusResult.CAVEAT)}</p>")
    out.append("<h3>Deviation</h3>")
    tests = numbers["deviation_from_tests"]
    if tests:
        out.append(_table(["measure", "result"], [[html.escape(str(r.get("measure"))), _result_cells(r)]
                                                  for r in tests]))
    else:
        deviation = numbers["deviation"] or {}
        out.append(f"<p>{_fmt(deviation.get('reason') or 'not measured')}.</p>")
    if numbers["uncalibrated_r_minus_l_deg"] is not None:
        yaw, pitch = numbers["uncalibrated_r_minus_l_deg"]
        out.append(f"<p class='note'>Median right minus left gaze over the whole recording, in uncalibrated "
                   f"tracker angles: yaw {yaw:+.2f}°, pitch {pitch:+.2f}°. This is not a deviation measure (each "
                   "eye's tracker angle has its own offset until it is calibrated); compare it between visits.</p>")
    return "".join(out)


def _tests_section(events: list[dict[str, Any]]) -> str:
    tests = [e for e in events if e.get("kind") == "exam_result" and isinstance(e.get("data"), dict)]
    if not tests:
        return "<h2>Guided tests</h2><p>No guided test was run while recording.</p>"
    out = ["<h2>Guided tests</h2>"]
    caveats: dict[str, str] = {}
    for event in tests:
        data = event["data"]
        stopped = data.get("stopped")
        out.append(f"<h3>{_fmt(data.get('test'))} at {_clock(event.get('video_t'))}"
                   f"{' (stopped: ' + _fmt(stopped) + ')' if stopped else ''}</h3>")
        quality = data.get("quality")
        if isinstance(quality, dict):
            out.append(f"<p class='note'>quality: {_result_cells(quality)}</p>")
        rows = []
        for result in data.get("results") or []:
            if isinstance(result, dict):
                rows.append([_fmt(result.get("measure")), _fmt(result.get("eye")), _result_cells(result)])
                if result.get("caveat"):
                    caveats[str(result.get("measure"))] = _caveat(result)
        out.append(_table(["measure", "eye", "numbers"], rows))
    out += [f"<p class='note'><b>{html.escape(m)}</b>: {c}</p>" for m, c in caveats.items()]
    return "".join(out)


def _marks(events: list[dict[str, Any]]) -> list[tuple[float, str]]:
    out = []
    for event in events:
        if event.get("kind") != "mark":
            continue
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        text = data.get("text") if isinstance(data.get("text"), str) else json.dumps(data)[:200]
        at = event.get("video_t", event.get("t"))
        out.append((float(at) if isinstance(at, int | float) else 0.0, text))
    return out


def _log_section(events: list[dict[str, Any]], marks: list[tuple[float, str]]) -> str:
    out = ["<h2>Marks</h2>"]
    out.append(_table(["#", "time (m:s)", "mark"], [[str(n), _clock(at), html.escape(text)]
                                                     for n, (at, text) in enumerate(marks, start=1)])
               if marks else "<p>The doctor made no mark.</p>")
    other = [e for e in events if e.get("kind") not in ("mark", "exam_result")]
    if other:
        out.append("<h2>Recording log</h2>" + _table(
            ["time (m:s)", "event", "details"],
            [[_clock(e.get("video_t")), _fmt(e.get("kind")), html.escape(json.dumps(e.get("data"))[:300])]
             for e in other]))
    return "".join(out)


def write_report(source: Source, out: Path, frames: int = FRAMES) -> dict[str, Any]:
    """Write the report; returns the numbers it shows (also embedded in it as JSON)."""
    from proxy.audit.report import STYLE, img, png_uri, strip

    traces, lines, bad = to_traces(source.params)
    source.unreadable_lines += bad
    numbers = exam_numbers(traces, source.events)
    marks = _marks(source.events)
    body = [f"<h1>maskproxy clinical report</h1><p class='note'>Made by maskproxy {__version__} from the stored "
            "mask parameters alone; the pictures are frames of the masked video (the avatar the doctor saw), never "
            "the camera's.</p>", _header(source, numbers)]
    shots = masked_frames(source, frames)
    if shots:
        body.append("<h2>The masked video</h2>" + img(png_uri(strip([s for _, s in shots])), "avatar",
                                                     "frames of the masked video")
                    + "<p class='note'>At " + ", ".join(_clock(t) for t, _ in shots) + " (m:s).</p>")
    if lines:
        body.append("<h2>Eye traces</h2>" + img(trace_chart(lines, marks), "plot", "eye and head traces")
                    + "<p class='note'>Right eye blue, left eye orange; gaps are frames where the eye or the face "
                    "could not be measured (never filled in). Red dashed lines are the doctor's marks.</p>")
    else:
        body.append("<h2>Eye traces</h2><p>No parameters were stored.</p>")
    body += [_exam_section(numbers), _tests_section(source.events), _log_section(source.events, marks)]
    summary = {"source": source.title, "version": __version__, "metadata": source.metadata, "exam": numbers,
               "marks": [{"t": t, "text": text} for t, text in marks]}
    data = json.dumps(summary, default=str).replace("</", "<\\/")
    out.write_text(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>maskproxy clinical "
                   f"report</title><style>{STYLE}</style></head><body>{''.join(body)}"
                   f"<script type='application/json' id='report-data'>{data}</script></body></html>")
    return summary


def run_report(args: argparse.Namespace) -> int:
    """``maskproxy report``: 0, or 2 with one line on stderr."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        print(f"maskproxy report: needs matplotlib for its plots ({EXTRA_HINT})", file=sys.stderr)
        return 2
    if not Path(args.out).parent.is_dir():
        raise InputError(f"{Path(args.out).parent}: no such folder")
    try:
        source = load_source(args)
        write_report(source, Path(args.out), args.frames)
    except RecordingError as exc:
        raise InputError(str(exc)) from None
    print(f"maskproxy report: wrote {args.out}", file=sys.stderr)
    return 0
