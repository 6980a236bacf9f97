"""What the avatar draws where the tracker measured nothing: the last good value, then neutral.

:class:`~proxy.params.MaskParams` carries ``None`` for an eye that could not
be measured (and for the gaze of a closed eye); the renderer needs numbers.
:class:`EyeHold` sits between the retargeter and the renderer and fills each
missing field: it keeps the field's last measured value for up to
:data:`HOLD_S`, then eases it to the neutral avatar's value over
:data:`EASE_S`. A blink therefore keeps the eye's gaze, a hand over one eye
leaves it still for a moment and then calm, and neither draws a guess of
what the eye did. Measured values pass through unchanged, so nothing is
smoothed or delayed. The parameters that leave the proxy as data keep their
``None``: only the picture is filled.
"""

from __future__ import annotations

from dataclasses import fields, replace

from proxy.params import MaskParams

#: How long a missing field keeps its last measured value (s).
HOLD_S = 0.5
#: How long it then takes to reach the neutral value (s).
EASE_S = 0.5

_NEUTRAL = MaskParams()
_NULLABLE = tuple(f.name for f in fields(MaskParams) if f.metadata.get("nullable"))


class EyeHold:
    """Fills the ``None`` fields of one stream's parameters for drawing. ``reset()`` between streams."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}  # field -> (value, time measured)

    def reset(self) -> None:
        self._last.clear()

    def __call__(self, params: MaskParams) -> MaskParams:
        """``params`` with every ``None`` replaced by a number fit to draw."""
        if not params.face:
            self._last.clear()  # a new face starts from neutral, not from the last person's eyes
            return params
        filled: dict[str, float] = {}
        for name in _NULLABLE:
            value = getattr(params, name)
            if value is not None:
                self._last[name] = (float(value), params.t)
                continue
            neutral = float(getattr(_NEUTRAL, name))
            last, since = self._last.get(name, (neutral, params.t - HOLD_S - EASE_S))
            share = min(max((params.t - since - HOLD_S) / EASE_S, 0.0), 1.0)
            filled[name] = last + share * (neutral - last)
        return replace(params, **filled) if filled else params
