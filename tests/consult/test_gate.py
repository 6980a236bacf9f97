"""Consults take turns to mask (proxy.consult.gate): in order, never more at once than the gate's slots."""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time

import av
import numpy as np
import pytest

from proxy.consult.gate import CpuGate, available_cpus
from proxy.consult.worker import MaskResult, MaskWorker
from proxy.params import MaskParams


def test_turns_pass_in_order_and_a_finisher_cannot_take_its_turn_back() -> None:
    gate = CpuGate(1, timeout=5.0)
    order: list[str] = []
    assert gate.acquire()

    def wait_turn(name: str) -> None:
        assert gate.acquire()
        order.append(name)
        gate.release()

    waiters = []
    for name in ("b", "c"):
        thread = threading.Thread(target=wait_turn, args=(name,))
        thread.start()
        waiters.append(thread)
        while len(gate._waiters) < len(waiters):  # queued in this order
            time.sleep(0.001)
    gate.release()
    assert gate.acquire()  # the releaser asks again at once: it queues behind both waiters
    order.append("a")
    gate.release()
    for thread in waiters:
        thread.join(5)
    assert order == ["b", "c", "a"]
    assert gate.timeouts == 0 and gate._free == 1


def test_a_stuck_turn_holds_the_others_up_only_for_the_wait_limit(caplog: pytest.LogCaptureFixture) -> None:
    gate = CpuGate(1, timeout=0.1)
    assert gate.acquire()  # held and never given back (a worker stuck in a driver call)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="proxy.consult.gate"):
        assert not gate.acquire()  # the next one goes ahead without a turn
        waited = time.monotonic() - start
        assert not gate.acquire()  # again: counted, but the operator is not told twice in a minute
    assert 0.09 <= waited < 1.0 and gate.timeouts == 2
    assert len([r for r in caplog.records if "held over" in r.getMessage()]) == 1
    gate.release()
    assert gate._free == 1 and not gate._waiters
    assert gate.acquire() and gate.acquire() is False  # still one slot, not two


def test_slots_default_to_the_cpus_this_process_may_use() -> None:
    assert CpuGate().slots == available_cpus() >= 1


class SlowPipeline:
    """Masks in ``seconds`` and records how many pipelines were masking at once and what they masked."""

    def __init__(self, seconds: float, log: dict[str, object], name: str) -> None:
        self.seconds, self.log, self.name = seconds, log, name
        self.timings: dict[str, float] = {}

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        with self.log["lock"]:  # type: ignore[attr-defined]
            self.log["now"] += 1  # type: ignore[operator]
            self.log["most"] = max(self.log["most"], self.log["now"])  # type: ignore[call-overload]
        time.sleep(self.seconds)
        with self.log["lock"]:  # type: ignore[attr-defined]
            self.log["now"] -= 1  # type: ignore[operator]
            self.log[self.name].append(int(rgb[0, 0, 0]))  # type: ignore[attr-defined]
        return MaskParams.neutral(index, t), np.zeros_like(rgb)

    def close(self) -> None:
        pass


def camera_frame(value: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), value, np.uint8), format="rgb24")
    frame.pts, frame.time_base = value, fractions.Fraction(1, 30)
    return frame


def test_workers_sharing_a_gate_never_mask_at_once_and_take_the_newest_frame_when_their_turn_comes() -> None:
    log: dict[str, object] = {"lock": threading.Lock(), "now": 0, "most": 0, "a": [], "b": []}
    loop = asyncio.new_event_loop()
    gate = CpuGate(1, timeout=5.0)
    results: list[MaskResult] = []
    workers = {name: MaskWorker(loop, results.append, gate=gate,
                                pipeline_factory=lambda name=name: SlowPipeline(0.15, log, name))
               for name in ("a", "b")}
    try:
        for worker in workers.values():
            worker.start()
        workers["a"].submit(camera_frame(10), time.monotonic())
        while log["now"] == 0:  # a is masking: b's frames wait for the turn
            time.sleep(0.001)
        workers["b"].submit(camera_frame(20), time.monotonic())
        time.sleep(0.03)
        workers["b"].submit(camera_frame(21), time.monotonic())  # b is waiting for its turn: 21 replaces 20
        time.sleep(0.03)
        workers["b"].submit(camera_frame(22), time.monotonic())
        deadline = time.monotonic() + 5
        while len(log["b"]) < 1 and time.monotonic() < deadline:  # type: ignore[arg-type]
            time.sleep(0.01)
    finally:
        for worker in workers.values():
            worker.stop()
        loop.close()
    assert log["most"] == 1  # never two at once on a gate of one slot
    assert log["a"] == [10]
    # b took its frame when its turn came, not when it started waiting: the newest, the older ones dropped
    assert log["b"] == [22] and workers["b"].dropped == 2


def test_a_worker_builds_its_pipeline_before_it_asks_for_a_turn() -> None:
    """A consult that starts (a second of model loading and GL setup) does not hold the others up meanwhile."""
    log: dict[str, object] = {"lock": threading.Lock(), "now": 0, "most": 0, "a": [], "b": []}
    loop = asyncio.new_event_loop()
    gate = CpuGate(1, timeout=0.1)

    def slow_to_build() -> SlowPipeline:
        time.sleep(0.4)
        return SlowPipeline(0.01, log, "b")

    running = MaskWorker(loop, lambda result: None, gate=gate, pipeline_factory=lambda: SlowPipeline(0.01, log, "a"))
    starting = MaskWorker(loop, lambda result: None, gate=gate, pipeline_factory=slow_to_build)
    try:
        running.start()
        starting.start()
        starting.submit(camera_frame(30), time.monotonic())
        deadline = time.monotonic() + 5
        value = 0
        while not log["b"] and time.monotonic() < deadline:  # the other consult keeps masking meanwhile
            running.submit(camera_frame(value % 200), time.monotonic())
            value += 1
            time.sleep(0.02)
    finally:
        running.stop()
        starting.stop()
        loop.close()
    assert log["b"] == [30] and len(log["a"]) > 10  # type: ignore[arg-type]
    assert gate.timeouts == 0  # nobody waited out a turn: the slow start happened outside one
