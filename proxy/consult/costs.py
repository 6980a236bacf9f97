"""What the live path costs, in CPU seconds per part, for ``/metrics`` and ``maskproxy bench --live``.

Two sources, both CPU time (not wall time: on a shared core a stage that waits
for the processor must not look expensive):

* each Python thread's CPU clock, grouped by what the thread does: the event
  loop (RTP, SRTP, SCTP, ICE, the relays, the HTTP API), the masking workers,
  aiortc's decoder threads (named by media kind), and the loop's executor, where
  aiortc runs the encoders of the senders that encode for themselves. What the
  process used beyond its Python threads (native threads: llvmpipe's
  rasterizer, ONNX Runtime's pool) is the rest of the process's CPU time;
* stages timed inside a thread with its own CPU clock, reported with :meth:`CostMeter.add`:
  the worker's camera-to-RGB conversion, tracking, retargeting, rendering,
  I420 conversion and the shared VP8 encode.

Totals only grow: a thread's time is read when the meter is sampled (each
``/metrics`` scrape), and what a thread used since the last sample is lost only
if it ends in between.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

#: Python threads by name (a prefix), and the part of the live path they run.
THREAD_PARTS = (
    ("MainThread", "event loop"),
    ("mask-worker", "masking worker"),
    ("video-decoder", "video decode"),
    ("audio-decoder", "audio decode"),
    ("asyncio_", "aiortc encoders (executor)"),
    ("ThreadPoolExecutor", "aiortc encoders (executor)"),
)
OTHER_THREADS = "other python threads"
NATIVE = "native threads"


def thread_part(name: str) -> str:
    for prefix, part in THREAD_PARTS:
        if name.startswith(prefix):
            return part
    return OTHER_THREADS


class CostMeter:
    """CPU seconds per part of the live path, accumulated over the server's life (thread-safe)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, float] = {}
        self._parts: dict[str, float] = {}
        self._seen = {ident: seconds for ident, _, seconds in self._read()}  #: thread ident -> CPU clock last read
        self._process0 = self._process_cpu()
        self._native = 0.0
        if registry is not None:
            registry.register(self)

    def add(self, stage: str, seconds: float) -> None:
        """``seconds`` of CPU spent in ``stage`` (any thread)."""
        with self._lock:
            self._stages[stage] = self._stages.get(stage, 0.0) + seconds

    @staticmethod
    def _read() -> list[tuple[int, str, float]]:
        """``(ident, part, CPU seconds)`` of every running Python thread."""
        readings = []
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None:
                continue
            try:
                seconds = time.clock_gettime(time.pthread_getcpuclockid(ident))
            except (OSError, OverflowError):  # ended in the meantime
                continue
            readings.append((ident, thread_part(thread.name), seconds))
        return readings

    def sample(self) -> None:
        """Read every Python thread's CPU clock and add what each used since the last sample."""
        readings = self._read()
        with self._lock:
            alive = set()
            for ident, part, seconds in readings:
                alive.add(ident)
                previous = self._seen.get(ident, 0.0)
                if seconds >= previous:
                    self._parts[part] = self._parts.get(part, 0.0) + seconds - previous
                self._seen[ident] = seconds
            for ident in set(self._seen) - alive:  # ended: a new thread may reuse the identifier
                del self._seen[ident]

    def totals(self) -> dict[str, float]:
        """``{"thread:<part>": s, "stage:<stage>": s, "process": s}`` since the meter started, sampled now."""
        self.sample()
        process = self._process_cpu() - self._process0
        with self._lock:
            out = {f"thread:{part}": value for part, value in self._parts.items()}
            out.update({f"stage:{stage}": value for stage, value in self._stages.items()})
            self._native = max(self._native, process - sum(self._parts.values()))
            out[f"thread:{NATIVE}"] = self._native
        out["process"] = process
        return out

    @staticmethod
    def _process_cpu() -> float:
        times = os.times()
        return times.user + times.system

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("maskproxy_cpu_seconds", "CPU time of the live path, by part "
                                     "(thread:<what a thread does>, stage:<timed inside a thread>, process)",
                                     labels=["part"])
        for part, seconds in sorted(self.totals().items()):
            family.add_metric([part], seconds)
        yield family
