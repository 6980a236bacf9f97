"""The cost meter (proxy.consult.costs) and what ``bench --live`` makes of it: CPU time per part that only grows,
by what each thread does, and room-state counters that never go backwards."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from proxy.bench.live import cost_breakdown, counters_backwards
from proxy.consult.costs import CostMeter


def burn(seconds: float) -> None:
    """Use ``seconds`` of this thread's CPU."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        sum(range(1000))


def thread_scenario() -> None:
    """Two threads named as a masking worker and a video decoder burn 0.12 and 0.04 s of CPU while a meter runs;
    prints the meter's totals and its metrics text as JSON. The next test runs it in a fresh interpreter, so that no
    thread left running by another test (a consult's masking worker or decoder finishing a frame) adds to the parts
    it checks."""
    registry = CollectorRegistry()
    meter = CostMeter(registry)
    sampled = threading.Event()

    def work(seconds: float) -> None:
        burn(seconds)
        sampled.wait(5.0)  # alive until the meter has read its clock

    worker = threading.Thread(target=work, args=(0.12,), name="mask-worker")
    decoder = threading.Thread(target=work, args=(0.04,), name="video-decoder")
    worker.start()
    decoder.start()
    deadline = time.monotonic() + 10
    while not _done(worker, decoder, 0.12, 0.04) and time.monotonic() < deadline:
        time.sleep(0.01)
    meter.sample()
    sampled.set()
    worker.join()
    decoder.join()
    meter.add("track", 0.02)
    json.dump({"totals": meter.totals(), "metrics": generate_latest(registry).decode()}, sys.stdout)


def test_thread_time_is_counted_by_what_the_thread_does() -> None:
    result = subprocess.run([sys.executable, "-c", "from tests.consult.test_costs import thread_scenario; "
                             "thread_scenario()"], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2], check=True)
    out = json.loads(result.stdout)
    totals = out["totals"]
    assert 0.12 <= totals["thread:masking worker"] <= 0.2
    assert 0.04 <= totals["thread:video decode"] <= 0.1
    assert totals["stage:track"] == 0.02
    # the process's CPU time comes in clock ticks (10 ms), user and system apart: it may read up to 2 ticks short
    assert totals["process"] >= totals["thread:masking worker"] + totals["thread:video decode"] - 0.02
    assert 'maskproxy_cpu_seconds_total{part="thread:masking worker"}' in out["metrics"]


def _done(first: threading.Thread, second: threading.Thread, a: float, b: float) -> bool:
    """Whether both threads have used their CPU time (read from their own clocks)."""
    clocks = [time.clock_gettime(time.pthread_getcpuclockid(t.ident)) for t in (first, second)]  # type: ignore[arg-type]
    return clocks[0] >= a and clocks[1] >= b


def test_totals_never_go_backwards() -> None:
    meter = CostMeter()
    before = meter.totals()
    for _ in range(3):
        thread = threading.Thread(target=burn, args=(0.02,), name="audio-decoder")
        thread.start()
        thread.join()  # ended threads' time stays counted
        after = meter.totals()
        assert all(after[k] >= v for k, v in before.items()), (before, after)
        before = after


def test_a_counter_going_backwards_is_reported() -> None:
    samples = [{"t": 10.0, "consult": 0, "counters": {"dropped": 5, "errors": 0}},
               {"t": 20.0, "consult": 1, "counters": {"dropped": 115}},
               {"t": 20.0, "consult": 0, "counters": {"dropped": 9, "errors": 0}},
               {"t": 30.0, "consult": 1, "counters": {"dropped": 0}}]
    assert counters_backwards(samples) == [{"consult": 1, "counter": "dropped", "from": 115, "to": 0,
                                            "between_s": [20.0, 30.0]}]
    assert counters_backwards(samples[:3]) == []


def test_the_breakdown_is_per_masked_frame_after_the_warm_up() -> None:
    costs = [(10.0, {"frames": 100.0, "process": 5.0, "thread:event loop": 1.0, "stage:encode": 0.5}),
             (20.0, {"frames": 400.0, "process": 8.0, "thread:event loop": 2.0, "stage:encode": 0.8}),
             (30.0, {"frames": 700.0, "process": 11.0, "thread:event loop": 2.6, "stage:encode": 1.4})]
    breakdown = cost_breakdown(costs, {"SRTP": 0.25, "asyncio and other": 0.75})
    assert breakdown is not None and breakdown["frames"] == 300  # from the sample at 20 s on
    assert breakdown["total_ms"] == 10.0 and breakdown["threads"]["event loop"] == 2.0
    assert breakdown["worker_stages"]["encode"] == 2.0
    assert breakdown["event_loop"] == {"SRTP": 0.5, "asyncio and other": 1.5}
    assert breakdown["consults_per_core_at_30fps"] == 3.33
