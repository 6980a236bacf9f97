"""``maskproxy bench --live``: consults through a real ``maskproxy serve``, with aiortc clients on loopback.

Starts the proxy as its own process (optionally pinned to some CPUs), opens
``--consults`` consults, each with a patient client sending the clip at 30 fps
and a doctor client receiving, and reports per consult the frame rate the
doctor receives, the proxy's added latency per minute (p50/p95, from the room
state: camera frame received -> masked frame encoded, ready to send), dropped
frames, the camera's bitrate as it arrives, and the proxy's peak memory; and the
round trip of an offer through the API (median of a few, each answered but never
connected). Bounded in time; loopback only.

It also prints what a consult-frame (one masked frame delivered, per consult) costs the proxy in CPU
milliseconds, part by part, from the server's ``maskproxy_cpu_seconds_total`` (proxy.consult.costs) between
the end of the warm-up and the end of the run, and from that the consults one core carries at 30 fps; with
``--profile`` (py-spy installed) a sampling profile of the server splits the event loop's share further
(RTP, SRTP, SCTP, UDP, HTTP). It checks that no counter of the room state ever goes backwards. With
``--cluster`` the consults run as Ray actors on a local multi-node cluster instead (:mod:`proxy.bench.cluster`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpus(text: str | None) -> set[int] | None:
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _memory_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of a process (MB)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def clip_frames(clip: Path, size: tuple[int, int], count: int = 300) -> list[np.ndarray]:
    """The first ``count`` frames of the clip (looped if shorter) as RGB, at ``size``."""
    from proxy.bench.clips import load_frames

    return [frame.to_ndarray(format="rgb24") for frame in load_frames(clip, size, count)]


async def _run_consult(base: str, room: dict[str, str], frames: list[np.ndarray], seconds: float) -> None:
    """One consult's two participants (run in a process of their own: see ``_client_main``).

    Prints one JSON line every 10 s with the frame rate the doctor receives.
    """
    from proxy.consult.client import ConsultClient

    async with aiohttp.ClientSession() as session:
        doctor = ConsultClient(base, room["room"], room["doctor_token"], "doctor")
        patient = ConsultClient(base, room["room"], room["patient_token"], "patient", frames=frames)
        await doctor.connect(session)
        await patient.connect(session)
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            await asyncio.sleep(10.0)
            masked = doctor.receivers.get("masked")
            print(json.dumps({"doctor_fps": round(masked.fps(10.0) if masked else 0.0, 1)}), flush=True)
        await patient.close()
        await doctor.close()


def _client_main() -> None:
    """``python -m proxy.bench.live BASE ROOM_JSON CLIP WxH SECONDS``: one consult's clients."""
    base, room, clip, size, seconds = sys.argv[1:6]
    width, height = (int(v) for v in size.split("x"))
    frames = clip_frames(Path(clip), (width, height))
    asyncio.run(_run_consult(base, json.loads(room), frames, float(seconds)))


#: Seconds of the run before the costs are measured (connections up, models loaded, encoders warm).
WARM_UP_S = 15.0
#: Room-state counters that must never go backwards.
COUNTERS = ("frames", "dropped", "masked", "errors", "restarts")


async def scrape_costs(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """The server's CPU seconds per part (``maskproxy_cpu_seconds_total``) and masked frames sent, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "maskproxy_cpu_seconds_total":
                out[sample.labels["part"]] = sample.value
            elif sample.name == "maskproxy_masked_frames_total":
                out["frames"] = sample.value
    return out


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def _consults(base: str, key: str, clip: Path, size: tuple[int, int], consults: int, seconds: float,
                    pid: int, client_cpus: set[int] | None, profile: Path | None = None) -> dict[str, Any]:
    """Open the consults, each with its clients in a process of their own (as browsers would be:
    clients sharing one Python process would measure their own GIL, not the proxy)."""
    samples: list[dict[str, Any]] = []
    costs: list[tuple[float, dict[str, float]]] = []
    spy: asyncio.subprocess.Process | None = None
    rooms: list[dict[str, str]] = []
    offers: list[list[float]] = []
    reads: list[list[float]] = []
    processes: list[asyncio.subprocess.Process] = []

    def pin() -> None:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)

    async with aiohttp.ClientSession() as session:
        for _ in range(consults):
            async with session.post(f"{base}/api/rooms", headers={"Authorization": f"Bearer {key}"}) as response:
                room = await response.json()
                if response.status != 201:
                    raise SystemExit(f"maskproxy bench: the proxy refused a consult: {response.status} {room}")
            rooms.append(room)
            offers.append(await offer_round_trips(session, base, room))
            reads.append(await state_round_trips(session, base, room))
            processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy.bench.live", base, json.dumps(room), str(clip), f"{size[0]}x{size[1]}",
                str(seconds), stdout=asyncio.subprocess.PIPE, preexec_fn=pin))
        start = time.monotonic()
        for _ in range(int(seconds // 10)):
            lines = [await process.stdout.readline() for process in processes]  # type: ignore[union-attr]
            elapsed = time.monotonic() - start
            rss, peak = _memory_mb(pid)
            costs.append((elapsed, await scrape_costs(session, base)))
            if profile is not None and spy is None and elapsed >= WARM_UP_S and seconds - elapsed > 15:
                spy = await asyncio.create_subprocess_exec(
                    py_spy() or "py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds - elapsed - 8)),
                    "--rate", "200", "--nonblocking", "--threads", "--format", "raw", "--output", str(profile),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, preexec_fn=pin)
            for index, (room, line) in enumerate(zip(rooms, lines, strict=True)):
                doctor_fps = json.loads(line)["doctor_fps"] if line.strip() else 0.0
                async with session.get(f"{base}/api/rooms/{room['room']}",
                                       headers={"Authorization": f"Bearer {room['doctor_token']}"}) as r:
                    state = await r.json()
                samples.append({"t": round(elapsed, 1), "consult": index, "doctor_fps": doctor_fps,
                                "mask_fps": state["mask"]["fps"], "dropped": state["mask"]["dropped"],
                                "latency_ms": state["mask"]["latency_ms"], "rss_mb": round(rss, 1),
                                "camera_kbps": state["mask"].get("camera_kbps", 0),
                                "peak_rss_mb": round(peak, 1),
                                "counters": {k: state["mask"][k] for k in COUNTERS if k in state["mask"]}})
            print(f"  {elapsed:5.0f} s  " + "  ".join(
                f"consult {s['consult']}: doctor {s['doctor_fps']:.1f} fps (mask {s['mask_fps']:.1f}), latency p50 "
                f"{s['latency_ms']['p50']:.0f} p95 {s['latency_ms']['p95']:.0f} ms, dropped {s['dropped']}, "
                f"camera {s['camera_kbps']} kbit/s"
                for s in samples[-consults:]) + f"  RSS {rss:.0f} MB", flush=True)
        for process in processes:
            await process.wait()
        if spy is not None:
            await spy.wait()
    return {"samples": samples, "rooms": rooms, "offer_ms": [round(float(np.median(o)), 1) for o in offers],
            "state_ms": [round(float(np.median(r)), 1) for r in reads], "costs": costs}


def counters_backwards(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every room-state counter that went down between two samples of the same consult (there must be none)."""
    found = []
    last: dict[tuple[int, str], tuple[float, int]] = {}
    for sample in samples:
        for name, value in sample.get("counters", {}).items():
            key = (sample["consult"], name)
            if key in last and value < last[key][1]:
                found.append({"consult": sample["consult"], "counter": name, "from": last[key][1], "to": value,
                              "between_s": [last[key][0], sample["t"]]})
            last[key] = (sample["t"], value)
    return found


#: Where the event loop's time goes, by the innermost matching frame of a profile sample.
LOOP_PARTS = (
    ("pylibsrtp", "SRTP"),
    ("aioice", "UDP and ICE (aioice)"),
    ("rtcsctptransport", "SCTP (data channels)"),
    ("rtcrtpsender", "RTP send (packetize, history, stats)"),
    ("rtcrtpreceiver", "RTP receive (jitter buffer, NACK, REMB)"),
    ("aiortc/rtp.py", "RTP headers"),
    ("aiortc/rate.py", "RTP receive (jitter buffer, NACK, REMB)"),
    ("aiortc/jitterbuffer", "RTP receive (jitter buffer, NACK, REMB)"),
    ("rtcdtlstransport", "DTLS transport (demux)"),
    ("aiohttp/web_", "HTTP API"),
    ("prometheus_client", "HTTP API"),
    ("proxy/consult", "proxy's own loop work (relays, tracks, rooms)"),
)
IDLE_FRAMES = ("select (selectors.py", "EpollSelector.select")
#: The frame that runs one event-loop callback: what is inside it is that callback's work.
CALLBACK_FRAME = "Handle._run (asyncio/events.py"


def event_loop_split(profile: Path) -> dict[str, float]:
    """Shares (summing to 1) of the event loop thread's busy samples in a py-spy raw profile, by part."""
    counts: Counter[str] = Counter()
    for line in profile.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        head, _, rest = stack.partition(";")
        if not number.isdigit() or not head.endswith("MainThread"):
            continue
        frames = rest.split(";")
        if frames and any(idle in frames[-1] for idle in IDLE_FRAMES):
            continue
        callbacks = [i for i, frame in enumerate(frames) if CALLBACK_FRAME in frame]
        frames = frames[callbacks[-1] + 1:] if callbacks else []  # the loop's own frames and the server's start
        part = "asyncio and other"
        for frame in reversed(frames):
            found = next((name for marker, name in LOOP_PARTS if marker in frame), None)
            if found is not None:
                part = found
                break
        counts[part] += int(number)
    total = sum(counts.values())
    return {part: count / total for part, count in counts.most_common()} if total else {}


def cost_breakdown(costs: list[tuple[float, dict[str, float]]], loop_split: dict[str, float] | None = None
                   ) -> dict[str, Any] | None:
    """CPU milliseconds per consult-frame, by part, between the end of the warm-up and the last sample."""
    if len(costs) < 2:
        return None
    first = next((c for t, c in costs if t >= WARM_UP_S), costs[0][1])
    if first is costs[-1][1]:
        first = costs[0][1]
    last = costs[-1][1]
    frames = last.get("frames", 0.0) - first.get("frames", 0.0)
    if frames <= 0 or "process" not in last:
        return None

    def ms(part: str) -> float:
        return round((last.get(part, 0.0) - first.get(part, 0.0)) * 1000 / frames, 3)

    parts = sorted({p for p in last if p.startswith(("thread:", "stage:"))})
    out: dict[str, Any] = {"frames": int(frames), "total_ms": ms("process"),
                           "threads": {p.split(":", 1)[1]: ms(p) for p in parts if p.startswith("thread:")},
                           "worker_stages": {p.split(":", 1)[1]: ms(p) for p in parts if p.startswith("stage:")}}
    out["consults_per_core_at_30fps"] = round(1000 / (30 * out["total_ms"]), 2) if out["total_ms"] > 0 else None
    if loop_split:
        loop = out["threads"].get("event loop", 0.0)
        out["event_loop"] = {part: round(loop * share, 3) for part, share in loop_split.items()}
    return out


def print_breakdown(breakdown: dict[str, Any]) -> None:
    print(f"cost per consult-frame (CPU ms, over {breakdown['frames']} masked frames after the warm-up), by thread:")
    for part, value in sorted(breakdown["threads"].items(), key=lambda kv: -kv[1]):
        detail = ""
        if part == "event loop" and breakdown.get("event_loop"):
            detail = "  (" + ", ".join(f"{k} {v:.2f}" for k, v in breakdown["event_loop"].items()) + ")"
        print(f"  {part:<28}{value:8.2f}{detail}")
    per_core = breakdown["consults_per_core_at_30fps"]
    print(f"  {'total':<28}{breakdown['total_ms']:8.2f}  -> {per_core} consults per core at 30 fps")
    if breakdown["worker_stages"]:
        print("  of which, timed inside the threads: " + ", ".join(
            f"{k} {v:.2f}" for k, v in breakdown["worker_stages"].items()), flush=True)


async def state_round_trips(session: aiohttp.ClientSession, base: str, room: dict[str, str],
                            count: int = 20) -> list[float]:
    """Milliseconds for ``GET /api/rooms/{room}``, ``count`` times: the API's own cost in front of a room."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        async with session.get(f"{base}/api/rooms/{room['room']}",
                               headers={"Authorization": f"Bearer {room['doctor_token']}"}) as response:
            await response.read()
        times.append((time.perf_counter() - start) * 1000)
    return times


async def offer_round_trips(session: aiohttp.ClientSession, base: str, room: dict[str, str],
                            count: int = 5) -> list[float]:
    """Milliseconds from posting a doctor's offer to its answer, ``count`` times (the answers are not applied, so
    nothing connects; each offer replaces the one before). What the API adds in front of a room shows here."""
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
    pc.createDataChannel("mask")
    await pc.setLocalDescription(await pc.createOffer())
    body = {"token": room["doctor_token"], "role": "doctor", "sdp": pc.localDescription.sdp, "type": "offer"}
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            async with session.post(f"{base}/api/rooms/{room['room']}/offer", json=body) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"maskproxy bench: an offer was refused: {response.status}")
            times.append((time.perf_counter() - start) * 1000)
    finally:
        await pc.close()
    return times


def summarise(samples: list[dict[str, Any]], consults: int) -> dict[str, Any]:
    result: dict[str, Any] = {"consults": []}
    for index in range(consults):
        mine = [s for s in samples if s["consult"] == index and s["t"] >= 15]
        if not mine:
            continue
        minute_marks = [s for s in mine if abs(s["t"] % 60) < 5 or s is mine[-1]]
        result["consults"].append({
            "consult": index,
            "doctor_fps_min": min(s["doctor_fps"] for s in mine),
            "doctor_fps_mean": round(float(np.mean([s["doctor_fps"] for s in mine])), 1),
            "latency_first_minute": (minute_marks[0] if minute_marks else mine[0])["latency_ms"],
            "latency_last_minute": mine[-1]["latency_ms"],
            "dropped": mine[-1]["dropped"],
            # the camera's bitrate moves the decoder's and the event loop's cost per frame (and the tracking)
            "camera_kbps_mean": round(float(np.mean([s.get("camera_kbps", 0) for s in mine]))),
        })
    result["peak_rss_mb"] = max(s["peak_rss_mb"] for s in samples) if samples else 0.0
    result["peak_rss_mb_per_consult"] = round(result["peak_rss_mb"] / max(consults, 1), 1)
    return result


@contextmanager
def serving(args: argparse.Namespace, environment: dict[str, str] | None = None) -> Iterator[tuple[Any, str, str]]:
    """``maskproxy serve`` in a process of its own on a free loopback port: (process, base URL, API key)."""
    key = secrets.token_urlsafe(16)
    port = free_port()
    env = {**os.environ, "MASKPROXY_API_KEY": key, "MASKPROXY_MAX_CONSULTS": str(max(args.consults, 1)),
           "MASKPROXY_LOG_LEVEL": "WARNING", "MASKPROXY_THREADS": str(args.threads), **(environment or {})}
    server_cpus = _cpus(args.server_cpus)

    def pin() -> None:  # runs in the child before exec: every thread it starts inherits this
        if server_cpus:
            os.sched_setaffinity(0, server_cpus)

    errors = tempfile.TemporaryFile()  # not a pipe: nobody reads it while serving, and a full pipe would block it
    server = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=errors, preexec_fn=pin)
    server.log = errors  # type: ignore[attr-defined]  # read by server_log()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    errors.seek(0)
                    raise SystemExit("maskproxy bench: the proxy did not start: "
                                     + errors.read().decode(errors="replace")[-500:]) from None
                time.sleep(0.3)
        yield server, base, key
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        errors.close()


def server_log(server: Any, keep: int = 5) -> dict[str, Any]:
    """How many WARNING/ERROR lines the server logged so far (it runs at WARNING), and the last few."""
    log = getattr(server, "log", None)
    if log is None:
        return {"count": 0, "last": []}
    log.seek(0)
    lines = [line for line in log.read().decode(errors="replace").splitlines()
             if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]
    log.seek(0, os.SEEK_END)
    return {"count": len(lines), "last": lines[-keep:]}


def run_live(args: argparse.Namespace, clip: Path, size: tuple[int, int]) -> dict[str, Any]:
    if getattr(args, "cluster", False):
        from proxy.bench.cluster import run_cluster_live

        return run_cluster_live(args, clip, size)
    with serving(args) as (server, base, key):
        print(f"live: {args.consults} consult(s) at {size[0]}x{size[1]} for {args.seconds:.0f} s "
              f"(proxy on CPUs {sorted(_cpus(args.server_cpus)) if args.server_cpus else 'any'})", flush=True)
        profile = None
        if getattr(args, "profile", False):
            if py_spy() is None:
                print("--profile: py-spy is not installed (pip install py-spy); profiling skipped", flush=True)
            else:
                profile = Path(tempfile.mkdtemp(prefix="maskproxy-profile-")) / "server.raw"
        raw = asyncio.run(_consults(base, key, clip, size, args.consults, args.seconds, server.pid,
                                    _cpus(args.client_cpus), profile))
        errors = server_log(server)
    report = summarise(raw["samples"], args.consults)
    split = event_loop_split(profile) if profile is not None and profile.exists() else None
    report["cost"] = cost_breakdown(raw["costs"], split)
    if profile is not None:
        report["profile"] = str(profile)
    report["counters_backwards"] = counters_backwards(raw["samples"])
    report["server_log"] = errors
    if report["cost"]:
        print_breakdown(report["cost"])
    print(f"counters going backwards: {report['counters_backwards'] or 'none'}; server warnings and errors: "
          f"{errors['count']}" + "".join(f"\n  {line}" for line in errors["last"]), flush=True)
    report["offer_ms"], report["state_ms"] = raw["offer_ms"], raw["state_ms"]
    report["samples"] = raw["samples"]
    report["size"] = f"{size[0]}x{size[1]}"
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    return report


if __name__ == "__main__":
    _client_main()
