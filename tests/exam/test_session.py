"""ExamSession end to end: a doctor's commands, a simulated patient whose eyes follow the dot their page draws,
and the messages both pages get; junk ignored and counted."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import pytest

from proxy.exam.session import ExamSession, Outgoing
from proxy.exam.targets import Segment, TargetSchedule
from proxy.params import MaskParams
from tests.exam.streams import FPS, jerk_nystagmus, pursuit_eye
from tests.exam.test_calibration import TRACKER

#: (dot or None, time) -> true (right, left) eye directions (deg), None for an eye not measurable.
Eyes = Callable[[np.ndarray | None, float], tuple[np.ndarray | None, np.ndarray | None]]


def fixating(dot: np.ndarray | None, t: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    point = np.zeros(2) if dot is None else dot
    return point, point


class Patient:
    """A patient's page and eyes at 30 fps: draws the dot the proxy commands, and the tracker reads the eyes."""

    def __init__(self, session: ExamSession, seed: int = 0) -> None:
        self.session = session
        self.rng = np.random.default_rng(seed)
        self.t = 10.0
        self.frame = 0
        self.doctor: list[dict] = []
        self.patient: list[dict] = []
        self.schedule: TargetSchedule | None = None
        self.shown_at = 0.0

    def deliver(self, messages: list[Outgoing]) -> None:
        for message in messages:
            json.dumps(message.message, allow_nan=False)  # every message is strict JSON
            (self.doctor if message.to == "doctor" else self.patient).append(message.message)
            body = message.message.get("exam")
            if message.to == "patient" and body is not None:
                if body["test"] == "stop":
                    self.schedule = None
                else:  # the page draws exactly what the command says, lead_s after it arrives
                    segments = tuple(Segment(s["t0"], s["t1"], s["yaw"], s["pitch"], s["amp_yaw"], s["amp_pitch"],
                                             s["hz"], s["label"]) for s in body["segments"])
                    self.schedule = TargetSchedule(body["test"], segments)
                    self.shown_at = self.t - 1 / FPS + body["lead_s"]

    def send(self, role: str, data: object) -> list[Outgoing]:
        out = self.session.receive(role, data if isinstance(data, str | bytes) else json.dumps(data))
        self.deliver(out)
        return out

    def dot(self) -> np.ndarray | None:
        if self.schedule is None:
            return None
        position = self.schedule.position(self.t - self.shown_at)[0]
        return position if np.isfinite(position).all() else None

    def run(self, seconds: float, eyes: Eyes = fixating, until_result: bool = False, **fields: float) -> None:
        end = self.t + seconds
        while self.t < end:
            right, left = eyes(self.dot(), self.t)
            params = MaskParams(frame=self.frame, t=self.t, face=True, **fields)
            for name, true in (("right", right), ("left", left)):
                if true is None:
                    setattr(params, f"{name}_gaze_yaw", None)
                    setattr(params, f"{name}_gaze_pitch", None)
                    continue
                m = TRACKER[name]
                read = m[:, :2] @ true + m[:, 2] + self.rng.normal(0, 0.3, 2)
                setattr(params, f"{name}_gaze_yaw", float(read[0]))
                setattr(params, f"{name}_gaze_pitch", float(read[1]))
            before = len(self.doctor)
            self.deliver(self.session.feed(params))
            self.t += 1 / FPS
            self.frame += 1
            if until_result and any("exam_result" in m for m in self.doctor[before:]):
                return

    def result(self) -> dict:
        return [m["exam_result"] for m in self.doctor if "exam_result" in m][-1]

    def last(self, kind: str) -> dict:
        return [m[kind] for m in self.doctor if kind in m][-1]


def cover(eye: str) -> Eyes:
    def eyes(dot: np.ndarray | None, t: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        point = np.zeros(2) if dot is None else dot
        return (point, None) if eye == "right" else (None, point)
    return eyes


def left_eso(degrees: float) -> Eyes:
    def eyes(dot: np.ndarray | None, t: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        point = np.zeros(2) if dot is None else dot
        return point, point + np.array([-degrees, 0.0])  # the left eye turned in: towards the patient's right
    return eyes


def calibrate(patient: Patient) -> None:
    for eye, covered in (("right", "left"), ("left", "right")):
        patient.send("doctor", {"exam": {"test": "calibration", "eye": eye}})
        assert f"{covered.upper()} eye" in patient.patient[-1]["exam"]["instruction"]
        patient.run(20.0, cover(eye), until_result=True)
        result = patient.result()
        assert result["test"] == "calibration" and result["stopped"] is None
        assert result["results"][0]["calibrated"], result["results"][0]


def test_calibrate_then_fixate_with_a_5deg_esotropia() -> None:
    """Screen report, each eye calibrated under cover, then a fixation test: 8.7 prism dioptres eso, live too."""
    session = ExamSession()
    patient = Patient(session)
    patient.run(1.0)
    patient.send("patient", {"screen": {"width_css_px": 1440, "height_css_px": 900, "card_css_px": 323,
                                        "distance_cm": 55}})
    calibrate(patient)
    assert session.stats()["calibrated"] == ["right", "left"]
    patient.send("doctor", {"exam": {"test": "fixation", "duration_s": 6}})
    started = patient.last("exam_started")
    assert started["screen"]["scale_source"] == "card" and started["screen"]["distance_mm"] == 550.0
    patient.run(10.0, left_eso(5.0), until_result=True)
    result = patient.result()
    assert result["quality"]["right_measured"] == 1.0 and result["quality"]["head_motion_deg"] == 0.0
    by_measure = {(r["measure"], r.get("eye")): r for r in result["results"]}
    deviation = by_measure["deviation", None]
    assert deviation["horizontal"] == "eso" and deviation["horizontal_pd"] == pytest.approx(8.7, abs=0.5)
    assert deviation["error_pd"] < 1.0 and "caveat" in deviation
    assert by_measure["fixation", "right"]["bcea_deg2"] > 0 and by_measure["fixation", "right"]["calibrated"]
    # the doctor's traces get the dot beside the gaze, on the frames' clock
    targets = [m["exam_target"] for m in patient.doctor if "exam_target" in m and m["exam_target"]["id"] == 3]
    assert len(targets) == pytest.approx(6 * FPS, abs=2) and all(t["yaw"] == 0.0 for t in targets)
    patient.run(3.0, left_eso(5.0))
    live = patient.last("exam_live")
    assert live["deviation"]["horizontal"] == "eso"
    assert live["deviation"]["horizontal_pd"] == pytest.approx(8.7, abs=0.5)
    assert live["calibration"]["left"]["calibrated"]


def test_pursuit_through_the_session_reads_its_gain() -> None:
    session = ExamSession()
    patient = Patient(session, seed=1)
    patient.run(1.0)
    calibrate(patient)
    patient.send("doctor", {"exam": {"test": "pursuit", "axes": "horizontal", "cycles": 3}})
    command = patient.patient[-1]["exam"]
    schedule = patient.schedule
    assert command["test"] == "pursuit" and schedule is not None
    t = patient.t + np.arange(int((command["lead_s"] + command["duration_s"] + 1) * FPS)) / FPS
    origin = patient.shown_at
    eye, _ = pursuit_eye(schedule, t - origin, gain=0.8, catch_up_deg=2.0)
    path = dict(zip(np.round(t, 6), eye, strict=True))

    def following(dot: np.ndarray | None, now: float) -> tuple[np.ndarray, np.ndarray]:
        point = np.array([path.get(round(now, 6), 0.0) if dot is not None else 0.0, 0.0])
        return point, point

    patient.run(40.0, following, until_result=True)
    result = patient.result()
    assert result["test"] == "pursuit" and result["stopped"] is None
    for gain in result["results"]:
        assert gain["calibrated"] and gain["gain"] == pytest.approx(0.8, abs=0.05), gain


def test_live_readouts_find_nystagmus_ptosis_and_blinks() -> None:
    session = ExamSession()
    patient = Patient(session, seed=2)

    def beating(dot: np.ndarray | None, t: float) -> tuple[np.ndarray, np.ndarray]:
        point = np.array([float(jerk_nystagmus(np.array([t]), 3.0, 4.0)[0]), 0.0])
        return point, point

    patient.run(5.0, beating, right_mrd1=1.0, left_mrd1=4.0, right_aperture=0.3, left_aperture=0.32)
    lives = [m["exam_live"] for m in patient.doctor if "exam_live" in m]
    assert len(lives) == pytest.approx(5, abs=1)  # once a second
    live = lives[-1]
    for result in live["nystagmus"]:
        assert result["detected"] and result["frequency_hz"] == pytest.approx(3.0, abs=0.2)
        assert result["conjugate"] is True and result["beating"] == "right-beating"
    assert [r["ptosis"] for r in live["lids"]] == [True, False]
    assert live["deviation"]["horizontal_pd"] is None and "not calibrated" in live["deviation"]["reason"]
    assert live["blinks"][0]["count"] == 0


def test_junk_from_either_side_is_ignored_and_counted() -> None:
    session = ExamSession()
    patient = Patient(session)
    patient.run(1.0)
    junk = [("doctor", b"\x00\xff" * 40), ("doctor", "x" * 5000), ("doctor", '{"exam": {"test": "format c:"}}'),
            ("doctor", '{"exam": {"test": "pursuit", "frequency_hz": 99}}'),
            ("doctor", '{"exam": {"test": "pursuit", "frequency_hz": 0.05, "cycles": 10}}'),  # would last 400 s
            ("patient", '{"exam": {"test": "pursuit"}}'), ("patient", '{"exam": {"test": "stop"}}'),
            ("doctor", '{"screen": {"width_css_px": 1000, "height_css_px": 800}}'),
            ("patient", '{"exam_started": {"id": 99}}'), ("patient", '{"exam_exit": {"id": 1}}'),
            ("patient", "null"), ("doctor", "[]"), ("doctor", "")]
    rng = np.random.default_rng(3)
    junk += [("doctor", bytes(rng.integers(0, 256, int(n)).astype(np.uint8))) for n in rng.integers(1, 300, 40)]
    for role, data in junk:
        assert session.receive(role, data) == []  # type: ignore[arg-type]
    ignored = session.ignored
    assert sum(ignored.values()) == len(junk)
    assert ignored["not_allowed"] == 3 and ignored["oversized"] == 1 and ignored["stale"] == 2
    assert ignored["out_of_range"] == 2 and ignored["unknown"] == 1
    assert session.stats()["tests"] == 0 and session.stats()["running"] is None
    patient.run(1.0)
    assert not patient.patient  # the patient's page got nothing


def test_stop_exit_replace_restart_and_close() -> None:
    session = ExamSession()
    patient = Patient(session)
    patient.run(0.5)
    patient.send("doctor", {"exam": {"test": "fixation"}})
    test_id = patient.patient[-1]["exam"]["id"]
    patient.run(3.0)
    patient.send("doctor", {"exam": {"test": "stop"}})
    assert patient.result()["stopped"] == "doctor" and patient.patient[-1]["exam"] == {"test": "stop", "id": test_id}
    assert patient.send("doctor", {"exam": {"test": "stop"}}) == []  # nothing running: nothing to say

    patient.send("doctor", {"exam": {"test": "nine_positions"}})
    patient.send("doctor", {"exam": {"test": "saccades"}})
    assert patient.result()["stopped"] == "replaced"
    saccades_id = patient.patient[-1]["exam"]["id"]
    patient.run(3.0)
    patient.send("patient", {"exam_exit": {"id": saccades_id}})
    assert patient.result()["stopped"] == "patient" and session.stats()["running"] is None

    patient.send("doctor", {"exam": {"test": "fixation"}})
    patient.run(1.0)
    patient.t -= 30  # the patient rejoined: a new stream clock
    patient.run(0.2)
    assert patient.result()["stopped"] == "stream restarted"

    session.close()
    assert session.calibration.eyes == {}
    assert session.feed(MaskParams(t=100.0, face=True)) == []
    assert session.receive("doctor", '{"exam": {"test": "fixation"}}') == []


def test_the_patients_start_report_sets_the_clock() -> None:
    """The dot started late on the patient's screen: the schedule follows the page's report, not the command."""
    session = ExamSession()
    patient = Patient(session)
    patient.run(1.0)
    patient.send("doctor", {"exam": {"test": "fixation", "duration_s": 3}})
    test_id = patient.patient[-1]["exam"]["id"]
    patient.run(2.5)
    reported = patient.t - 1 / FPS
    patient.send("patient", {"exam_started": {"id": test_id}})
    patient.run(4.0, until_result=True)
    targets = [m["exam_target"]["t"] for m in patient.doctor if "exam_target" in m]
    assert targets[0] == pytest.approx(reported - 0.5, abs=0.04)  # first drawn on the command's clock
    assert targets[-1] == pytest.approx(reported + 3.0 - 1 / FPS, abs=0.04)  # then 3 s from the report
    assert patient.send("patient", {"exam_started": {"id": test_id}}) == [] and session.ignored["stale"] == 1


def test_feeding_costs_little_per_frame() -> None:
    """The session runs beside the masking worker: its mean cost per frame, live readouts included, is small."""
    session = ExamSession()
    patient = Patient(session, seed=4)
    patient.run(4.0)
    start = time.perf_counter()
    patient.run(10.0)
    per_frame_ms = (time.perf_counter() - start) * 1000 / (10 * FPS)
    print(f"ExamSession.feed with the simulated patient: {per_frame_ms:.2f} ms per frame")
    assert per_frame_ms < 5.0
