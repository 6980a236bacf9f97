"""The examination's data-channel vocabulary: the few messages each role may send, strictly validated.

The doctor starts and stops tests::

    {"exam": {"test": "pursuit", "frequency_hz": 0.2, "amplitude_deg": 10, "cycles": 3, "axes": "both"}}
    {"exam": {"test": "saccades", "amplitude_deg": 10, "count": 12, "interval_s": 1.5, "axes": "both", "seed": 0}}
    {"exam": {"test": "fixation", "duration_s": 10}}
    {"exam": {"test": "nine_positions", "eccentricity_deg": 15, "hold_s": 3}}
    {"exam": {"test": "calibration", "eye": "right", "eccentricity_deg": 10, "hold_s": 2}}
    {"exam": {"test": "stop"}}

Every option is optional (the defaults are in :data:`OPTIONS`) and bounded. The
patient's page reports its screen and the test's progress::

    {"screen": {"width_css_px": 1440, "height_css_px": 900, "card_css_px": 323,
                "diagonal_in": 13.3, "distance_cm": 55}}          (card, diagonal and distance optional)
    {"exam_started": {"id": 3}}      the dot of test 3 started moving
    {"exam_exit": {"id": 3}}         the patient pressed the exit button

Anything else is rejected with a :class:`Rejected` that names a reason: a
message over :data:`MAX_MESSAGE_BYTES`, malformed JSON, an unknown message,
test or option, a number out of its bounds, or a message the sender's role may
not send (a patient cannot start tests). The caller counts and ignores them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["doctor", "patient"]

#: Longest accepted message, bytes (UTF-8).
MAX_MESSAGE_BYTES = 1024


@dataclass(frozen=True)
class Option:
    """One bounded option: a number in [low, high], an integer in [low, high], or one of ``choices``."""

    default: float | int | str | None
    low: float = 0.0
    high: float = 0.0
    integer: bool = False
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: object) -> float | int | str:
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise Rejected("out_of_range", f"{name} must be one of {', '.join(self.choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise Rejected("out_of_range", f"{name} must be a number")
        if self.integer and value != int(value):
            raise Rejected("out_of_range", f"{name} must be a whole number")
        if not self.low <= value <= self.high:
            raise Rejected("out_of_range", f"{name} must be between {self.low:g} and {self.high:g}")
        return int(value) if self.integer else float(value)


_AXES = Option("both", choices=("horizontal", "vertical", "both"))

#: Each test's options with defaults and bounds. ``None`` default: required.
OPTIONS: dict[str, dict[str, Option]] = {
    "pursuit": {"frequency_hz": Option(0.2, 0.05, 1.0), "amplitude_deg": Option(10.0, 2.0, 25.0),
                "cycles": Option(3, 1, 10, integer=True), "axes": _AXES},
    "saccades": {"amplitude_deg": Option(10.0, 2.0, 25.0), "count": Option(12, 2, 40, integer=True),
                 "interval_s": Option(1.5, 0.8, 4.0), "axes": _AXES, "seed": Option(0, 0, 2**31 - 1, integer=True)},
    "fixation": {"duration_s": Option(10.0, 2.0, 60.0)},
    "nine_positions": {"eccentricity_deg": Option(15.0, 5.0, 30.0), "hold_s": Option(3.0, 1.5, 6.0)},
    "calibration": {"eye": Option(None, choices=("right", "left")), "eccentricity_deg": Option(10.0, 4.0, 20.0),
                    "hold_s": Option(2.0, 1.0, 4.0)},
    "stop": {},
}

#: The screen report's fields (CSS px, inches, cm); width and height are required.
SCREEN_FIELDS: dict[str, Option] = {
    "width_css_px": Option(None, 200, 10000), "height_css_px": Option(None, 150, 10000),
    "card_css_px": Option(None, 50, 3000), "diagonal_in": Option(None, 4, 120), "distance_cm": Option(None, 15, 250),
}
_REQUIRED_SCREEN = ("width_css_px", "height_css_px")


class Rejected(ValueError):
    """A message that is ignored, with the reason counted (``reason``) and explained (the message)."""

    REASONS = ("oversized", "malformed", "unknown", "out_of_range", "not_allowed", "stale")

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class ExamCommand:
    """A doctor's validated command: the test (or "stop") and its options, defaults filled in."""

    test: str
    options: dict[str, Any]


@dataclass(frozen=True)
class ScreenReport:
    """What the patient's page measured of its screen."""

    width_css_px: float
    height_css_px: float
    card_css_px: float | None = None
    diagonal_in: float | None = None
    distance_cm: float | None = None


@dataclass(frozen=True)
class PatientEvent:
    """The patient's page saying a test's dot started ("started") or the patient left it ("exit")."""

    kind: Literal["started", "exit"]
    test_id: int


Message = ExamCommand | ScreenReport | PatientEvent

#: Which role may send which top-level message.
ALLOWED: dict[str, Role] = {"exam": "doctor", "screen": "patient", "exam_started": "patient", "exam_exit": "patient"}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Rejected("malformed", "a key appears twice")
    return dict(pairs)


def _reject_constant(name: str) -> None:
    raise Rejected("malformed", f"{name} is not a number")


def _options(spec: dict[str, Option], given: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise Rejected("unknown", f"unknown {where} option {unknown[0][:40]!r}")
    out: dict[str, Any] = {}
    for name, option in spec.items():
        if name in given:
            out[name] = option.check(name, given[name])
        elif option.default is not None:
            out[name] = option.default
    return out


def parse_message(data: str | bytes, role: Role) -> Message:
    """One data-channel message from ``role``, validated; raises :class:`Rejected` with the reason."""
    if not isinstance(data, str | bytes):
        raise Rejected("malformed", "a message is text or bytes")
    size = len(data.encode() if isinstance(data, str) else data)
    if size > MAX_MESSAGE_BYTES:
        raise Rejected("oversized", f"message over {MAX_MESSAGE_BYTES} bytes")
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, Rejected):
            raise
        raise Rejected("malformed", "not JSON") from None
    if not isinstance(value, dict) or len(value) != 1:
        raise Rejected("malformed", "a message is an object with one key")
    (kind, body), = value.items()
    if kind not in ALLOWED:
        raise Rejected("unknown", f"unknown message {kind[:40]!r}")
    if ALLOWED[kind] != role:
        raise Rejected("not_allowed", f"the {role} may not send {kind!r}")
    if not isinstance(body, dict):
        raise Rejected("malformed", f"{kind} must be an object")
    if kind == "exam":
        test = body.get("test")
        if not isinstance(test, str) or test not in OPTIONS:
            raise Rejected("unknown", "unknown test")
        given = {k: v for k, v in body.items() if k != "test"}
        options = _options(OPTIONS[test], given, test)
        missing = [n for n, o in OPTIONS[test].items() if o.default is None and n not in options]
        if missing:
            raise Rejected("out_of_range", f"{test} needs {missing[0]}")
        return ExamCommand(test, options)
    if kind == "screen":
        fields = _options(SCREEN_FIELDS, body, "screen")
        missing = [n for n in _REQUIRED_SCREEN if n not in fields]
        if missing:
            raise Rejected("out_of_range", f"screen needs {missing[0]}")
        return ScreenReport(**fields)
    test_id = _options({"id": Option(None, 0, 2**31 - 1, integer=True)}, body, kind).get("id")
    if test_id is None:
        raise Rejected("out_of_range", f"{kind} needs id")
    return PatientEvent("started" if kind == "exam_started" else "exit", test_id)
