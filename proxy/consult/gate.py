"""Masking one frame at a time per core: the consults of a process take turns, in order.

Each consult masks in a thread of its own. With more consults than cores the
operating system time-slices them, so every frame in flight takes as long as
all of them together: two consults on one core each see their frame take twice
its CPU time, and a frame waits for the one before it as well. A
:class:`CpuGate` lets only as many workers mask at once as there are cores;
the others wait their turn, first come first served (a release hands the slot
straight to the longest waiter, so a worker that finishes cannot take it back
before the others). A worker takes the newest camera frame only once it holds
a slot, so a frame's time from arrival to encoding is its own CPU time plus
at most one other frame's, and frames that arrive while it waits replace each
other (dropped, as always when the proxy is behind).

A worker stuck inside its turn (a hung driver call) must not stop the other
consults: a waiter gives up after ``timeout`` seconds and masks anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

log = logging.getLogger(__name__)

#: Seconds a worker waits for its turn before it masks without one (a stuck worker holds its slot).
WAIT_LIMIT = 0.25
#: At most one warning per this many seconds about turns held too long.
WARN_EVERY_S = 60.0


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class CpuGate:
    """``slots`` turns at once, handed over first come first served. Thread-safe.

    ``acquire()`` returns True with a turn (the caller then calls ``release()``), or False after
    ``timeout`` seconds without one (the caller goes ahead and does not release).
    """

    def __init__(self, slots: int | None = None, timeout: float = WAIT_LIMIT) -> None:
        self.slots = slots if slots is not None else available_cpus()
        if self.slots < 1:
            raise ValueError(f"a gate needs at least one slot, not {self.slots}")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._free = self.slots
        self._waiters: deque[threading.Lock] = deque()
        self.timeouts = 0  #: waits that gave up (a turn held too long)
        self._warned: float | None = None

    def acquire(self) -> bool:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=self.timeout):
            return True  # handed over by release()
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return True  # handed over between the timeout and the lock
            self.timeouts += 1
            now = time.monotonic()
            warn = self._warned is None or now - self._warned >= WARN_EVERY_S
            if warn:
                self._warned = now
        if warn:
            log.warning("a masking turn was held over %.2f s (a worker stuck?): masking without one (%d times so far)",
                        self.timeout, self.timeouts)
        return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()  # the turn passes straight to the longest waiter
            else:
                self._free = min(self._free + 1, self.slots)
