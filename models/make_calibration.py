"""Fit the avatar's calibration: what to draw so that our tracker reads back what was measured.

The calibration (``proxy/avatar/calibration.py``) is a set of polynomials, each in every
parameter that moves it: an eye's drawn rotation in that eye's wanted gaze, aperture and lid
split and the head's pose, size and place; the drawn head pose in the wanted head pose and
place. The lids are drawn at their measured height, uncalibrated (see the note before
``FUNCTIONS``: the doctor looks at the picture). It is fitted on the avatar alone, never on
anybody's video:

1. Open loop. The avatar is drawn as it is (no calibration) at parameter sets spread over
   a range wider than the human one, every parameter at once (a Latin hypercube, the two
   eyes independently), and each picture is tracked (``proxy.avatar.response.RoundTrip``:
   the real tracker and retargeter with the file settings). Each function is fitted as the
   inverse, the drawn value as a polynomial of what was read, by least squares with gross
   tracker failures left out. Then as many of a patient looking at the screen
   (``proxy.avatar.response.sample_fixating``: the head anywhere in the human range, the
   eyes making up for it), the posture of most of a consult, which a sample spread over
   every parameter at once reaches only in its corners.
2. Closed loop, ``--rounds`` times. Fresh parameter sets over the human range (a third of
   them over the range of a consult's usual gaze and pose, a third looking at the screen)
   are drawn through the calibration and tracked; what was drawn and what was read there
   join the pairs of step 1, and the inverse is fitted again.
3. Correction, ``--corrections`` times. A fresh closed-loop sample is drawn through the
   calibration and tracked; the mean error left (read minus wanted, per eye and for the
   head, as a polynomial of the wanted values) is taken out by refitting each function to
   draw what it drew for the wanted values minus that error (on a large sample of wanted
   values: no rendering). Steps 1-2 regress what was drawn on what was read, which the
   tracker's noise biases; this step aims at the loop's mean error, the vergence bias above all.
4. Held out. Another fresh sample, drawn through the final calibration, gives the figures
   stored with it (``info``) and printed.

Each eye has its own functions, fitted by least squares on the same sample, so the mean
right-minus-left error (the vergence the avatar would add) is zero wherever the polynomials
resolve it; step 4 reports it by head-pose band.

Usage::

    python models/make_calibration.py [--samples 2000] [--rounds 1] [--cache DIR]

Writes ``avatar_calibration.npz`` beside itself. Re-run it whenever the tracker, the
retargeter or the way the avatar is drawn changes. ``--cache`` keeps each stage's
measurements (keyed by its settings and the calibration it drew through) so that a refit
with other polynomial settings renders nothing again.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.avatar.calibration import (  # noqa: E402
    CALIBRATION_FILE,
    EYE_OUTPUTS,
    Calibration,
    Polynomial,
    monomial_powers,
)
from proxy.avatar.mesh import upper_share  # noqa: E402
from proxy.avatar.response import (  # noqa: E402
    HUMAN_RANGE,
    RoundTrip,
    round_trip_errors,
    sample_fixating,
    sample_human_range,
    summary,
)
from proxy.params import MaskParams  # noqa: E402

#: The open loop's range: wider than the human one, so that what is read covers it.
DRAWN_RANGE = {**HUMAN_RANGE, "head_yaw": (-45.0, 45.0), "head_pitch": (-30.0, 30.0), "head_roll": (-25.0, 25.0),
               "head_scale": (0.13, 0.34), "gaze_yaw": (-45.0, 45.0), "gaze_pitch": (-35.0, 35.0),
               "camera_yaw": (-55.0, 55.0), "camera_pitch": (-35.0, 40.0), "upper_share": (0.4, 0.9)}
#: The open loop's patients looking at the screen: a little wider than the human range.
FIXATING_DRAWN = {"head_yaw": (-42.0, 42.0), "head_pitch": (-27.0, 27.0), "gaze_yaw": (-35.0, 35.0),
                  "gaze_pitch": (-20.0, 25.0)}
#: How far past the human range's camera bounds (degrees) readings still inform the fit.
CAMERA_MARGIN = 5.0
#: A consult's usual range, where a third of each closed-loop sample lies.
CONSULT_RANGE = {**HUMAN_RANGE, "head_yaw": (-15.0, 15.0), "head_pitch": (-12.0, 12.0), "head_roll": (-8.0, 8.0),
                 "gaze_yaw": (-15.0, 15.0), "gaze_pitch": (-5.0, 15.0), "aperture": (0.2, 0.45),
                 "camera_yaw": (-25.0, 25.0), "camera_pitch": (-12.0, 20.0)}
#: Inputs of each eye's functions (see ``calibration.py``), the highest power of each, and the
#: total degree. The lids' split moves the gaze read (the upper lid covers the iris's top), the
#: gaze moves the lids read; the head's size stands for the distance. Quadratic: cubics fit the
#: open loop's points more closely but swing between them (one drew an eye 29 deg to the side for
#: a straight one), which the held-out points show as a worse loop and a false vergence.
EYE_INPUTS = ("gaze_yaw", "gaze_pitch", "aperture", "share", "head_yaw", "head_pitch", "head_roll", "head_scale",
              "head_x", "head_y")
EYE_CAPS = (2, 2, 1, 1, 2, 2, 1, 1, 1, 1)
#: No function for the lids' opening: they are drawn at their measured absolute height. Our tracker reads
#: the avatar's lids compressed (drawn openings of 0.2-0.42 eye widths read 0.34-0.43 when the eye looks up a
#: little: its iris model expects the upper lid to follow the eye), and an inverse that made it read them right
#: drew them 2.3 times as far from normal for a person looking at the picture (an eye 0.2 open shut, one 0.4
#: open staring at 0.65); a cubic one drew a normal eye half shut. The doctor looks at the picture.
HEAD_INPUTS = ("head_yaw", "head_pitch", "head_roll", "head_x", "head_y")
FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[int, ...], int]] = {
    "gaze_yaw": (EYE_INPUTS, EYE_CAPS, 2),
    "gaze_pitch": (EYE_INPUTS, EYE_CAPS, 2),
    "head_yaw": (HEAD_INPUTS, (3, 3, 3, 1, 1), 3),
    "head_pitch": (HEAD_INPUTS, (3, 3, 3, 1, 1), 3),
    "head_roll": (HEAD_INPUTS, (3, 3, 3, 1, 1), 3),
}
#: Gaze is fitted and judged only where the eye is open this far (eye widths, drawn and read):
#: below it the tracker holds the last gaze, as during a blink.
GAZE_MIN_APERTURE = 0.2
#: Apertures the tracker reads: its iris model puts the lids no further apart than about this
#: (eye widths), on the avatar as on real eyes, however wide they are drawn. The functions' aperture
#: input covers up to it, and held-out aperture errors are judged only below it.
READABLE_APERTURE = 0.45
#: Ridge penalty (relative to the mean squared feature) that keeps high-order terms tame.
RIDGE = 1e-4
#: Points further than this many robust SDs from a fit are tracker failures, left out.
OUTLIER_SDS = 4.0
#: Wanted parameter sets on which a corrected calibration's functions are refitted (no rendering).
DENSE_POINTS = 20000
#: Head-pose bands of the held-out figures (largest of |yaw|, |pitch|, |roll|, degrees).
HEAD_BANDS = ((0.0, 15.0), (15.0, 30.0), (30.0, 45.0))


# ---- measurements as named columns ------------------------------------------------------


def columns(params: Sequence[MaskParams | None]) -> dict[str, np.ndarray]:
    """Named columns (``right.gaze_yaw``, ``head_pitch``, ...) of parameter sets; NaN where missing."""
    def value(p: MaskParams | None, name: str) -> float:
        v = None if p is None else getattr(p, name)
        return math.nan if v is None else float(v)

    out: dict[str, np.ndarray] = {}
    for name in ("head_yaw", "head_pitch", "head_roll", "head_scale", "head_x", "head_y"):
        out[name] = np.array([value(p, name) for p in params])
    for side in ("right", "left"):
        for key in ("gaze_yaw", "gaze_pitch", "aperture"):
            out[f"{side}.{key}"] = np.array([value(p, f"{side}_{key}") for p in params])
        out[f"{side}.share"] = np.array([
            math.nan if p is None or p.face is False else upper_share(value(p, f"{side}_upper_lid"),
                                                                    value(p, f"{side}_lower_lid"))
            for p in params])
    return out


def inputs_of(table: dict[str, np.ndarray], names: Sequence[str], side: str) -> np.ndarray:
    """(n, len(names)) matrix of a function's inputs for one eye (head inputs are shared).

    A gaze that was not read (a closed eye) is the neutral face's, as :class:`Calibration` takes it.
    """
    def column(name: str) -> np.ndarray:
        if name.startswith("head_"):
            return table[name]
        values = table[f"{side}.{name}"]
        if name.startswith("gaze_"):
            values = np.where(np.isfinite(table[f"{side}.aperture"]) & np.isnan(values), 0.0, values)
        return values

    return np.stack([column(n) for n in names], axis=1)


def _number(params: MaskParams, name: str) -> float:
    value = getattr(params, name)
    return math.nan if value is None else float(value)


#: The measured fields a cache keeps.
FIELDS = ("head_yaw", "head_pitch", "head_roll", "head_scale", "head_x", "head_y",
          *(f"{side}_{k}" for side in ("right", "left")
            for k in ("gaze_yaw", "gaze_pitch", "aperture", "upper_lid", "lower_lid")))


def code_version() -> str:
    """Hash of everything that draws or reads the avatar (tracker, retargeter, mesh, renderer, shaders)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for pattern in ("proxy/params.py", "proxy/tracking/*.py", "proxy/avatar/*.py", "shaders/*"):
        for path in sorted(root.glob(pattern)):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def measure(calibration: Calibration, wanted: list[MaskParams], cache: Path | None, label: str
            ) -> list[MaskParams | None]:
    """track(render(p)) for each p through ``calibration``.

    With a ``cache`` folder the rows are kept under a key of everything that matters (the
    parameters and the calibration), saved as they come, so an interrupted run goes on where it
    stopped and a finished one is not measured again.
    """
    key = hashlib.sha256(repr([label, [p.to_json(6) for p in wanted], sorted(
        (name, f.coef.tobytes().hex()) for name, f in calibration.functions.items()), code_version()]
    ).encode()).hexdigest()[:16]
    path = cache / f"{label}-{key}.npz" if cache else None
    rows: list[list[float]] = []
    if path is not None and path.exists():
        rows = np.load(path, allow_pickle=False)["measured"].tolist()
    start, done = time.perf_counter(), len(rows)
    if done < len(wanted):
        with RoundTrip(calibration) as loop:
            for i in range(done, len(wanted)):
                measured = loop(wanted[i])
                rows.append([math.nan] * len(FIELDS) if measured is None else [_number(measured, f) for f in FIELDS])
                if (i + 1) % 100 == 0 or i + 1 == len(wanted):
                    rate = (time.perf_counter() - start) / (i + 1 - done)
                    print(f"  {label}: {i + 1}/{len(wanted)} ({rate * 1000:.0f} ms each)", flush=True)
                    if path is not None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        np.savez_compressed(path, measured=np.array(rows))
    return [None if np.isnan(row[0]) else MaskParams.from_json(
        {"face": True, **{k: None if np.isnan(v) else float(v) for k, v in zip(FIELDS, row, strict=True)}})
        for row in rows[:len(wanted)]]


# ---- fitting ----------------------------------------------------------------------------


def fit_polynomial(x: np.ndarray, y: np.ndarray, inputs: tuple[str, ...], degree: int,
                   low: np.ndarray, high: np.ndarray, extend: np.ndarray,
                   caps: Sequence[int] | None = None) -> Polynomial:
    """Least-squares polynomial y ~ f(x) over the box [low, high], leaving out gross outliers."""
    powers = monomial_powers(len(inputs), degree, caps)
    shell = Polynomial(inputs, low, high, powers, np.zeros(len(powers)), extend)
    features = shell.features(x) + 0.0
    keep = np.ones(len(y), dtype=bool)
    for _ in range(3):
        a, b = features[keep], y[keep]
        penalty = RIDGE * float((a**2).mean()) * len(b)
        gram = a.T @ a + penalty * np.eye(a.shape[1])
        gram[0, 0] -= penalty  # the constant is free
        coef = np.linalg.solve(gram, a.T @ b)
        residual = y - features @ coef
        scale = 1.4826 * float(np.median(np.abs(residual[keep]))) + 1e-9
        keep = np.abs(residual) < OUTLIER_SDS * scale
    return Polynomial(inputs, low, high, powers, coef, extend)


def function_box(inputs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each input's range for the calibration's functions: the human range (the readable part for apertures)."""
    ranges = {**HUMAN_RANGE, "share": HUMAN_RANGE["upper_share"], "aperture": (0.0, READABLE_APERTURE)}
    return np.array([ranges[n][0] for n in inputs]), np.array([ranges[n][1] for n in inputs])


def readable_direction(read: dict[str, np.ndarray], side: str) -> np.ndarray:
    """Whether the eye's direction read from the camera (head plus gaze) lies within the human range's
    camera bounds (plus :data:`CAMERA_MARGIN`): beyond them the iris nears the lid corner and the
    reading no longer follows the drawn eye one to one."""
    ok = np.ones(len(read["head_yaw"]), dtype=bool)
    for axis in ("yaw", "pitch"):
        low, high = HUMAN_RANGE[f"camera_{axis}"]
        direction = read[f"head_{axis}"] + read[f"{side}.gaze_{axis}"]
        ok &= (direction >= low - CAMERA_MARGIN) & (direction <= high + CAMERA_MARGIN)
    return ok


def gaze_rows(drawn: dict[str, np.ndarray], seen: dict[str, np.ndarray], side: str) -> np.ndarray:
    """Rows whose gaze informs a fit: the eye drawn open (:data:`GAZE_MIN_APERTURE`) and its direction from
    the camera, as ``seen`` (read back, or wanted), within the human range."""
    return (drawn[f"{side}.aperture"] >= GAZE_MIN_APERTURE) & readable_direction(seen, side)


def fit_inverse(drawn: dict[str, np.ndarray], read: dict[str, np.ndarray]) -> Calibration:
    """Each drawn value as a polynomial of the values read back: the calibration's functions.

    Gaze is fitted where the eye was drawn open (:data:`GAZE_MIN_APERTURE`), its gaze was read and
    its direction from the camera lies within the human range. Beyond the range each function goes
    on at its mean slope along its own input and ignores the others.
    """
    functions: dict[str, Polynomial] = {}
    for name, (inputs, caps, degree) in FUNCTIONS.items():
        sides = ("right", "left") if name in EYE_OUTPUTS else ("",)
        for side in sides:
            column = f"{side}.{name}" if side else name
            x, target = inputs_of(read, inputs, side), drawn[column]
            ok = np.isfinite(x).all(1) & np.isfinite(target)
            if side:
                ok &= gaze_rows(drawn, read, side) & np.isfinite(read[column])
            own = inputs.index(name)
            slope = float(np.polyfit(x[ok, own], target[ok], 1)[0])
            extend = np.array([slope if i == own else 0.0 for i in range(len(inputs))])
            low, high = function_box(inputs)
            functions[f"{side}.{name}" if side else name] = fit_polynomial(
                x[ok], target[ok], inputs, degree, low, high, extend, caps)
    return Calibration(functions)


def closed_loop_sample(n: int, seed: int) -> list[MaskParams]:
    """Wanted parameter sets for a closed-loop step: a third over the human range, a third over a
    consult's usual range, a third of a patient looking at the screen."""
    third = n // 3
    return (sample_human_range(third, seed) + sample_human_range(third, seed + 1, CONSULT_RANGE)
            + sample_fixating(n - 2 * third, seed + 2))


def correct(calibration: Calibration, wanted: list[MaskParams], measured: list[MaskParams | None],
            seed: int) -> Calibration:
    """Take out what the closed loop still gets wrong on average.

    The error left (read minus wanted) of each eye's gaze and of the head pose is fitted
    as a polynomial of the wanted values (the same inputs as the functions); then each function is
    refitted, on a large sample of wanted values (no rendering), to draw what it drew for the wanted
    values minus that error. The inverse fit of steps 1-2 is a regression of what was drawn on what was
    read, whose noise biases it; this step aims at the loop's own mean error, and so at the vergence
    bias, directly.
    """
    want, read = columns(wanted), columns(measured)
    errors: dict[str, Polynomial] = {}
    for name, (inputs, caps, _) in FUNCTIONS.items():
        for side in ("right", "left") if name in EYE_OUTPUTS else ("",):
            column = f"{side}.{name}" if side else name
            x, error = inputs_of(want, inputs, side), read[column] - want[column]
            ok = np.isfinite(x).all(1) & np.isfinite(error)
            if side:
                ok &= gaze_rows(want, want, side)
            low, high = function_box(inputs)
            errors[column] = fit_polynomial(x[ok], error[ok], inputs, 2, low, high, np.zeros(len(inputs)),
                                            [min(c, 2) for c in caps])
    table = columns(closed_loop_sample(DENSE_POINTS, seed))
    corrected = {}
    for column, error in errors.items():
        side = column.split(".")[0] if "." in column else ""
        corrected[column] = table[column] - error(inputs_of(table, error.inputs, side))
    # each function is fed its own quantities corrected (an eye's gaze for its rotation, the head's pose for
    # the head's); its other inputs say what is wanted around it
    functions: dict[str, Polynomial] = {}
    for name, function in calibration.functions.items():
        side, _, output = name.rpartition(".")
        shifted = dict(table)
        for key in ("gaze_yaw", "gaze_pitch") if side else ("head_yaw", "head_pitch", "head_roll"):
            column = f"{side}.{key}" if side else key
            shifted[column] = corrected[column]
        target = function(inputs_of(shifted, function.inputs, side))
        x = inputs_of(table, function.inputs, side)
        ok = np.isfinite(x).all(1) & np.isfinite(target)
        caps = [int(c) for c in function.powers.max(0)]
        functions[name] = fit_polynomial(x[ok], target[ok], function.inputs, int(function.powers.sum(1).max()),
                                         function.low, function.high, function.extend, caps)
    return Calibration(functions)


def drawn_columns(calibration: Calibration, wanted: list[MaskParams]) -> dict[str, np.ndarray]:
    """What ``calibration`` drew for each parameter set, as named columns."""
    return columns([calibration.drawn(p) for p in wanted])


def merge(*tables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


# ---- report -----------------------------------------------------------------------------


def held_out_figures(wanted: list[MaskParams], measured: list[MaskParams | None]) -> dict[str, object]:
    """Closed-loop errors on a held-out sample: overall, and by head-pose band."""
    errors = round_trip_errors(wanted, measured)
    for side in ("right", "left"):
        over = np.array([getattr(p, f"{side}_aperture") > READABLE_APERTURE for p in wanted])
        errors[f"{side}_aperture"][over] = math.nan
    figures: dict[str, object] = {"all": summary(errors)}
    pose = np.array([max(abs(p.head_yaw), abs(p.head_pitch), abs(p.head_roll)) for p in wanted])
    for low, high in HEAD_BANDS:
        band = (pose >= low) & (pose < high)
        if band.any():
            figures[f"head {low:.0f}-{high:.0f}"] = summary({k: v[band] for k, v in errors.items()})
    return figures


def print_figures(figures: dict[str, object]) -> None:
    keys = ("gaze_median", "gaze_p95", "aperture_median", "aperture_p95", "vergence_yaw_bias",
            "vergence_pitch_bias", "head_median", "head_p95", "measured")
    print(f"{'':14s}" + "".join(f"{k:>20s}" for k in keys))
    for band, values in figures.items():
        assert isinstance(values, dict)
        print(f"{band:14s}" + "".join(f"{values[k]:20.3f}" for k in keys))


def measure_and_report(calibration: Calibration, wanted: list[MaskParams], cache: Path | None, label: str,
                       title: str) -> tuple[list[MaskParams | None], dict[str, object]]:
    """track(render(p)) through ``calibration`` (:func:`measure`), its figures printed under ``title``."""
    measured = measure(calibration, wanted, cache, label)
    figures = held_out_figures(wanted, measured)
    print(f"{title}:", flush=True)
    print_figures(figures)
    return measured, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="open-loop parameter sets")
    parser.add_argument("--fixating", type=int, default=1500,
                        help="open-loop parameter sets of a patient looking at the screen")
    parser.add_argument("--closed", type=int, default=2400, help="closed-loop parameter sets per round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--corrections", type=int, default=1,
                        help="closed-loop steps that take out the mean error left (step 3)")
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, help="folder keeping each stage's measurements")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / CALIBRATION_FILE)
    args = parser.parse_args()
    start = time.perf_counter()

    print(f"open loop: {args.samples} renders over the drawn range", flush=True)
    drawn = sample_human_range(args.samples, args.seed, DRAWN_RANGE)
    drawn_table = columns(drawn)
    read_table = columns(measure(Calibration.identity(), drawn, args.cache, "open"))
    print(f"open loop: {args.fixating} renders of a patient looking at the screen", flush=True)
    drawn = sample_fixating(args.fixating, args.seed + 7, {**HUMAN_RANGE, **FIXATING_DRAWN})
    drawn_table = merge(drawn_table, columns(drawn))
    read_table = merge(read_table, columns(measure(Calibration.identity(), drawn, args.cache, "open-fixating")))
    calibration = fit_inverse(drawn_table, read_table)

    for round_ in range(1, args.rounds + 1):
        wanted = closed_loop_sample(args.closed, args.seed + 100 * round_)
        measured, _ = measure_and_report(calibration, wanted, args.cache, f"closed{round_}", f"closed loop {round_}")
        # what was drawn and what was read there are more pairs for the same fit, where it matters most
        drawn_table = merge(drawn_table, drawn_columns(calibration, wanted))
        read_table = merge(read_table, columns(measured))
        calibration = fit_inverse(drawn_table, read_table)

    for step in range(1, args.corrections + 1):
        wanted = closed_loop_sample(args.closed, args.seed + 500 * step)
        measured, _ = measure_and_report(calibration, wanted, args.cache, f"correct{step}",
                                         f"closed loop before correction {step}")
        calibration = correct(calibration, wanted, measured, args.seed + 500 * step + 7)

    figures = measure_and_report(calibration, sample_human_range(args.held_out, args.seed + 9999), args.cache,
                                 "held-out", "held out, human range")[1]
    consult = measure_and_report(calibration, sample_human_range(args.held_out // 2, args.seed + 9998, CONSULT_RANGE),
                                 args.cache, "held-out-consult", "held out, a consult's usual range")[1]
    fixating = measure_and_report(calibration, sample_fixating(args.held_out // 2, args.seed + 9997), args.cache,
                                  "held-out-fixating", "held out, looking at the screen")[1]
    info = {
        "fitted_on": "renders of the avatar alone (proxy.avatar.response.RoundTrip, file settings)",
        "samples": {"open": args.samples, "open_fixating": args.fixating, "closed": args.closed,
                    "rounds": args.rounds, "corrections": args.corrections, "held_out": args.held_out},
        "seed": args.seed,
        "readable_aperture": READABLE_APERTURE,
        "held_out": figures,
        "held_out_consult": consult,
        "held_out_fixating": fixating,
    }
    Calibration(calibration.functions, info).save(args.out)
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
