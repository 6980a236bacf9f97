"""The audit's work, spread over processes: a person's photos or a clip is one task, each process has its own models.

Every photo and every clip resets the pipeline and the trackers it uses, so a result does not depend on which
process made it or what that process made before; ``--jobs 1`` keeps everything in the calling process.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

#: What tracing one photo costs against one video frame (dlib and six descriptors against a track, a render and a
#: track again): it orders the work so that no long task is left running alone at the end.
PHOTO_COST_FRAMES = 6


@dataclass
class Task:
    """One piece of the audit that a process does on its own: a person's photos, or one clip (mirrored or cropped)."""

    index: int
    cost: float  #: in video frames
    person: str = ""
    photos: list[Path] = field(default_factory=list)
    clip: Path | None = None
    flip: bool = False
    crop: bool = False


def default_jobs() -> int:
    """One process per CPU that this process may run on (its affinity, as ``taskset`` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class AuditWorker:
    """The models one process needs for its tasks: the mask pipeline, a second tracker that reads the avatar back,
    and dlib's attacker (loaded with the first photo)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from proxy.avatar.retarget import Retargeter
        from proxy.pipeline import MaskPipeline
        from proxy.tracking.tracker import FaceTracker

        self.args = args
        self.pipeline = MaskPipeline(eye_samples=args.eye_samples, supersample=args.supersample,
                                     trim_every=args.trim_every)
        self.tracker, self.retarget = FaceTracker(eye_samples=args.eye_samples), Retargeter()
        self.attacker: Any = None
        self.fallback: Callable[[Any], Any] | None = None  #: BlazeFace where dlib finds no face on a photo

    def run(self, task: Task, tick: Callable[[str], None]) -> Any:
        """A person's photos as :class:`~proxy.audit.reid.PhotoResult` s, or a clip's
        :class:`~proxy.audit.fidelity.ClipTrace`; ``tick("photos")`` or ``tick("frames")`` after each."""
        from proxy.audit.fidelity import trace_clip
        from proxy.audit.reid import Attacker, blazeface_box, process_photo

        if task.clip is None:
            if self.attacker is None or self.fallback is None:
                self.attacker, self.fallback = Attacker(), blazeface_box(self.pipeline.tracker.detector)
            done = []
            for path in task.photos:
                done.append(process_photo(task.person, path, self.attacker, self.pipeline, self.fallback))
                tick("photos")
            return done
        return trace_clip(task.clip, self.pipeline, self.tracker, self.retarget, self.args.max_seconds,
                          lambda: tick("frames"), task.flip, task.crop)

    def close(self) -> None:
        self.pipeline.close()


def _take_tasks(waiting: Any, ticks: Any, args: argparse.Namespace) -> list[tuple[int, Any]]:
    """One process of ``--jobs``: takes tasks until none are left."""
    done = []
    worker = AuditWorker(args)
    try:
        while True:
            try:
                task = waiting.get_nowait()
            except queue.Empty:
                return done
            done.append((task.index, worker.run(task, ticks.put)))
    finally:
        worker.close()


def run_tasks(tasks: list[Task], args: argparse.Namespace, jobs: int, bars: dict[str, tqdm]) -> list[Any]:
    """Every task's result, in the tasks' order: in this process, or in ``jobs`` processes, costliest first."""
    if jobs <= 1:
        worker = AuditWorker(args)
        try:
            return [worker.run(task, lambda kind: bars[kind].update()) for task in tasks]
        finally:
            worker.close()
    context = multiprocessing.get_context("spawn")  # a fresh process: no GL context or ONNX session inherited
    with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context) as pool:
        waiting, ticks = manager.Queue(), manager.Queue()
        for task in sorted(tasks, key=lambda t: -t.cost):
            waiting.put(task)
        futures = [pool.submit(_take_tasks, waiting, ticks, args) for _ in range(jobs)]
        while not all(f.done() for f in futures) or not ticks.empty():
            if any(f.done() and f.exception() is not None for f in futures):
                with contextlib.suppress(queue.Empty):  # a worker failed: the others stop after their current task
                    while True:
                        waiting.get_nowait()
            try:
                bars[ticks.get(timeout=0.5)].update()
            except queue.Empty:
                pass
        results = dict(pair for future in futures for pair in future.result())  # raises a worker's error
    return [results[task.index] for task in tasks]
