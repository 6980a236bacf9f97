"""The avatar's calibration: what to draw so that a tracker reads back what was measured.

Our tracker, run on the avatar, does not read exactly what was drawn: its iris model
under-reads eyeball rotations (vertical ones more, as the lids cover the iris), and how
much depends on the head's pose and the lids; the lid reading depends on the gaze and the
head's pitch; the head-pose fit reads the drawn head a little off. A :class:`Calibration`
maps the *wanted* parameters (what the tracker measured on the patient) to the *drawn*
ones, jointly over the parameters that interact:

* each eye's drawn rotation (yaw, pitch): a function of that eye's wanted gaze and
  aperture and of the head's pose, size and place in the picture;
* each eye's drawn opening could be one of that eye's wanted aperture, lid split and gaze
  pitch and of the head's (a calibration without it draws the lids at their measured
  absolute height, which is what the shipped one does: our tracker reads the avatar's lids
  compressed, and taking that out drew them far from normal for a person looking at the
  picture; see ``models/make_calibration.py``);
* the drawn head pose: a function of the wanted head pose and the head's place (the
  tracker reads a head off the camera's axis a little turned: the avatar is drawn in
  perspective, as a camera sees a patient).

Each function is a low-order polynomial in all its inputs, fitted by
``models/make_calibration.py`` on renders of the avatar itself at known parameters (never
on anybody's video) so that track(render(p)) = p over the human range, and stored in
``models/avatar_calibration.npz``. Each eye has its own functions, fitted with the
vergence (right minus left) as a target of its own, so the avatar adds no squint.

What a low-order fit over the whole range leaves at the posture being held (a few degrees, and
different for the two eyes) is taken out while a stream runs by :mod:`proxy.avatar.trim`, which
reads the avatar back and trims the gaze asked of this calibration.

Only :class:`~proxy.params.MaskParams` go in and out: the calibration is the same for
every patient.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from proxy.avatar.mesh import drawn_lids, upper_share
from proxy.params import MaskParams
from proxy.resources import model_path

#: File name of the shipped calibration in ``models/``.
CALIBRATION_FILE = "avatar_calibration.npz"
#: The largest eyeball rotations drawn (degrees). Beyond them the iris would slip behind the
#: lid corner and vanish, which no tracker (or doctor) can read as "far to the side".
MAX_DRAWN_YAW, MAX_DRAWN_PITCH = 60.0, 45.0
#: Inputs of the functions, by name: the eye's own values, then the head's.
EYE_INPUTS = ("gaze_yaw", "gaze_pitch", "aperture", "share")
HEAD_INPUTS = ("head_yaw", "head_pitch", "head_roll", "head_scale", "head_x", "head_y")
#: The functions a calibration holds: per eye (``right.`` / ``left.``) and for the head.
EYE_OUTPUTS = ("gaze_yaw", "gaze_pitch", "opening")
HEAD_OUTPUTS = ("head_yaw", "head_pitch", "head_roll")


def monomial_powers(inputs: int, degree: int, caps: Sequence[int] | None = None) -> np.ndarray:
    """(T, inputs) exponents of every monomial of total degree at most ``degree``, constant first;
    ``caps`` limits each input's own power."""
    rows = [np.bincount(np.array(combo, dtype=np.int64), minlength=inputs)
            for total in range(degree + 1)
            for combo in itertools.combinations_with_replacement(range(inputs), total)]
    powers = np.stack(rows).astype(np.int64)
    if caps is not None:
        powers = powers[(powers <= np.asarray(caps)).all(1)]
    return powers


@dataclass(frozen=True)
class Polynomial:
    """One output as a polynomial in named inputs, each scaled to [-1, 1] over the fitted range.

    Inside the range it is the fitted polynomial; outside it, it holds the value at the range's
    edge plus ``extend`` (the output's change per unit of each input) times the excess, so a
    wanted value beyond the calibrated range still draws further, never wildly.
    """

    inputs: tuple[str, ...]
    low: np.ndarray  #: (n,) range of each input
    high: np.ndarray  #: (n,)
    powers: np.ndarray  #: (T, n) monomial exponents
    coef: np.ndarray  #: (T,)
    extend: np.ndarray  #: (n,) slope beyond the range

    def features(self, x: np.ndarray) -> np.ndarray:
        """(..., T) monomials of ``x`` (..., n), clipped to the range."""
        centre, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        z = np.clip((x - centre) / half, -1.0, 1.0)
        if z.ndim == 1:  # one point (a frame): a table of powers and one gather, no pow per monomial
            table = z[None, :] ** np.arange(int(self.powers.max()) + 1)[:, None]
            return table[self.powers, np.arange(len(z))].prod(axis=1)
        return np.prod(z[..., None, :] ** self.powers, axis=-1)

    def same_features(self, other: Polynomial) -> bool:
        """Whether ``other`` has the same inputs, range and monomials (so their features can be shared)."""
        return (self.inputs == other.inputs and np.array_equal(self.powers, other.powers)
                and np.array_equal(self.low, other.low) and np.array_equal(self.high, other.high))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Output for inputs ``x`` (..., n) in the inputs' own units."""
        x = np.asarray(x, dtype=np.float64)
        excess = x - np.clip(x, self.low, self.high)
        return self.features(x) @ self.coef + excess @ self.extend


_NEUTRAL = MaskParams()


def _number(params: MaskParams, name: str) -> float:
    """A field's value; the neutral face's where it is None (an eye that was not measured)."""
    value = getattr(params, name)
    return float(getattr(_NEUTRAL, name) if value is None else value)


def _values(params: MaskParams, side: str) -> dict[str, float]:
    """The named inputs of one eye's functions (and the head's) from wanted parameters."""
    upper, lower = _number(params, f"{side}_upper_lid"), _number(params, f"{side}_lower_lid")
    return {
        "gaze_yaw": _number(params, f"{side}_gaze_yaw"),
        "gaze_pitch": _number(params, f"{side}_gaze_pitch"),
        "aperture": _number(params, f"{side}_aperture"),
        "share": upper_share(upper, lower),
        "head_yaw": params.head_yaw,
        "head_pitch": params.head_pitch,
        "head_roll": params.head_roll,
        "head_scale": params.head_scale,
        "head_x": params.head_x,
        "head_y": params.head_y,
    }


@dataclass(frozen=True)
class Calibration:
    """Wanted parameters in, drawn parameters out (see the module docstring).

    An empty calibration (:meth:`identity`) draws what it is given: each eye's aperture as
    the opening, shared between the lids as the measured lids share it.
    """

    functions: Mapping[str, Polynomial] = field(default_factory=dict)
    #: What the fit was made with and what it reached (``make_calibration.py`` writes it).
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def identity(cls) -> Calibration:
        return cls()

    def _evaluate(self, names: Sequence[str], values: dict[str, float], same: Sequence[str]) -> list[float]:
        """The functions ``names`` at ``values`` (each missing one passes its own input ``same`` through);
        functions with the same inputs and monomials share one set of features."""
        out: list[float] = []
        shared: tuple[Polynomial, np.ndarray, np.ndarray] | None = None
        for name, own in zip(names, same, strict=True):
            function = self.functions.get(name)
            if function is None:
                out.append(float(values[own]))
                continue
            x = np.array([values[k] for k in function.inputs])
            if shared is None or not shared[0].same_features(function):
                shared = (function, x, function.features(x))
            excess = x - np.clip(x, function.low, function.high)
            out.append(float(shared[2] @ function.coef + excess @ function.extend))
        return out

    def drawn(self, params: MaskParams) -> MaskParams:
        """The parameters to draw for ``params``: the same fields, in the avatar's drawing units.

        Gaze angles are the eyeball rotations to draw (within :data:`MAX_DRAWN_YAW` /
        :data:`MAX_DRAWN_PITCH`), ``*_upper_lid`` / ``*_lower_lid`` the lid heights to draw
        and ``*_aperture`` the drawn opening; the head pose is the pose to draw. A value that
        is None (an eye not measured) is drawn as the neutral face's.
        """
        out = dataclasses.replace(params)
        for side in ("right", "left"):
            values = _values(params, side)
            yaw, pitch, opening = self._evaluate([f"{side}.{k}" for k in EYE_OUTPUTS], values,
                                                 ("gaze_yaw", "gaze_pitch", "aperture"))
            opening = max(0.0, opening)
            up, low = drawn_lids(opening, values["share"])
            setattr(out, f"{side}_gaze_yaw", float(np.clip(yaw, -MAX_DRAWN_YAW, MAX_DRAWN_YAW)))
            setattr(out, f"{side}_gaze_pitch", float(np.clip(pitch, -MAX_DRAWN_PITCH, MAX_DRAWN_PITCH)))
            setattr(out, f"{side}_aperture", up + low)
            setattr(out, f"{side}_upper_lid", up)
            setattr(out, f"{side}_lower_lid", low)
        head = self._evaluate(HEAD_OUTPUTS, _values(params, "right"), HEAD_OUTPUTS)
        for name, value in zip(HEAD_OUTPUTS, head, strict=True):
            setattr(out, name, value)
        return out

    # ---- storage ------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the calibration as one ``.npz`` (arrays only; ``info`` as JSON text)."""
        arrays: dict[str, np.ndarray] = {"info": np.array(json.dumps(dict(self.info), sort_keys=True))}
        for name, f in self.functions.items():
            arrays[f"{name}/inputs"] = np.array(f.inputs)
            for key in ("low", "high", "powers", "coef", "extend"):
                arrays[f"{name}/{key}"] = getattr(f, key)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        with np.load(path) as data:
            names = sorted({key.rsplit("/", 1)[0] for key in data.files if "/" in key})
            functions = {}
            for name in names:
                arrays = {key: data[f"{name}/{key}"] for key in ("low", "high", "powers", "coef", "extend")}
                for value in arrays.values():
                    value.setflags(write=False)
                functions[name] = Polynomial(inputs=tuple(str(s) for s in data[f"{name}/inputs"]), **arrays)
            info = json.loads(str(data["info"]))
        return cls(functions, info)


@lru_cache(maxsize=1)
def load_calibration() -> Calibration:
    """The shipped calibration (loaded once per process; read-only)."""
    return Calibration.load(model_path(CALIBRATION_FILE))
