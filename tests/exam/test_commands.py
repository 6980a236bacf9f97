"""The examination's data-channel vocabulary: valid messages parse, junk is rejected with a reason."""

from __future__ import annotations

import json

import pytest

from proxy.exam.commands import (
    MAX_MESSAGE_BYTES,
    ExamCommand,
    PatientEvent,
    Rejected,
    ScreenReport,
    parse_message,
)


def test_doctor_commands_get_their_defaults() -> None:
    command = parse_message('{"exam": {"test": "pursuit", "amplitude_deg": 8}}', "doctor")
    assert command == ExamCommand("pursuit", {"frequency_hz": 0.2, "amplitude_deg": 8.0, "cycles": 3, "axes": "both"})
    assert parse_message(b'{"exam": {"test": "stop"}}', "doctor") == ExamCommand("stop", {})
    calibration = parse_message('{"exam": {"test": "calibration", "eye": "left", "hold_s": 2.5}}', "doctor")
    assert calibration.options == {"eye": "left", "eccentricity_deg": 10.0, "hold_s": 2.5}
    saccades = parse_message('{"exam": {"test": "saccades", "count": 20.0, "seed": 3}}', "doctor")
    assert saccades.options["count"] == 20 and isinstance(saccades.options["count"], int)


def test_patient_messages() -> None:
    screen = parse_message(json.dumps({"screen": {"width_css_px": 1440, "height_css_px": 900, "card_css_px": 320.5}}),
                           "patient")
    assert screen == ScreenReport(1440.0, 900.0, card_css_px=320.5)
    assert parse_message('{"exam_started": {"id": 3}}', "patient") == PatientEvent("started", 3)
    assert parse_message('{"exam_exit": {"id": 3}}', "patient") == PatientEvent("exit", 3)


JUNK = [
    ("oversized", '{"exam": {"test": "stop", "x": "' + "a" * MAX_MESSAGE_BYTES + '"}}', "doctor"),
    ("malformed", "{not json", "doctor"),
    ("malformed", b"\xff\xfe\x00", "doctor"),
    ("malformed", "[1, 2]", "doctor"),
    ("malformed", None, "doctor"),
    ("malformed", {"exam": {"test": "stop"}}, "doctor"),
    ("malformed", '"exam"', "doctor"),
    ("malformed", "{}", "doctor"),
    ("malformed", '{"exam": {"test": "stop"}, "screen": {}}', "doctor"),
    ("malformed", '{"exam": {"test": "fixation", "duration_s": NaN}}', "doctor"),
    ("malformed", '{"exam": {"test": "fixation", "duration_s": 5, "duration_s": 50}}', "doctor"),
    ("malformed", '{"exam": "pursuit"}', "doctor"),
    ("malformed", "[" * 500 + "]" * 500, "doctor"),
    ("unknown", '{"eval": "alert(1)"}', "doctor"),
    ("unknown", '{"exam": {"test": "rm -rf"}}', "doctor"),
    ("unknown", '{"exam": {"test": ["pursuit"]}}', "doctor"),
    ("unknown", '{"exam": {}}', "doctor"),
    ("unknown", '{"exam": {"test": "pursuit", "colour": "red"}}', "doctor"),
    ("out_of_range", '{"exam": {"test": "pursuit", "frequency_hz": 50}}', "doctor"),
    ("out_of_range", '{"exam": {"test": "pursuit", "frequency_hz": true}}', "doctor"),
    ("out_of_range", '{"exam": {"test": "pursuit", "frequency_hz": "0.2"}}', "doctor"),
    ("out_of_range", '{"exam": {"test": "fixation", "duration_s": 1e308}}', "doctor"),
    ("out_of_range", '{"exam": {"test": "saccades", "count": 2.5}}', "doctor"),
    ("out_of_range", '{"exam": {"test": "pursuit", "axes": "diagonal"}}', "doctor"),
    ("out_of_range", '{"exam": {"test": "calibration"}}', "doctor"),
    ("out_of_range", '{"screen": {"width_css_px": 1440}}', "patient"),
    ("out_of_range", '{"screen": {"width_css_px": -5, "height_css_px": 900}}', "patient"),
    ("out_of_range", '{"exam_started": {}}', "patient"),
    ("out_of_range", '{"exam_started": {"id": -1}}', "patient"),
    ("not_allowed", '{"exam": {"test": "stop"}}', "patient"),
    ("not_allowed", '{"exam": {"test": "pursuit"}}', "patient"),
    ("not_allowed", '{"screen": {"width_css_px": 1440, "height_css_px": 900}}', "doctor"),
    ("not_allowed", '{"exam_exit": {"id": 1}}', "doctor"),
]


@pytest.mark.parametrize(("reason", "data", "role"), JUNK)
def test_junk_is_rejected_with_its_reason(reason: str, data: object, role: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_message(data, role)  # type: ignore[arg-type]
    assert caught.value.reason == reason, str(caught.value)
    assert caught.value.reason in Rejected.REASONS
    assert len(str(caught.value)) < 200  # a short reason, never the message echoed back
