"""``maskproxy bench --live --cluster``: the live bench with every consult a Ray actor on a local multi-node cluster.

A head without consult slots and one media node per consult plus a spare (one slot each, all on 127.0.0.1,
separate Ray processes per node), ``maskproxy serve --cluster`` in a process of its own as the API, and the
same client processes as the single-process run. Reports per consult the frame rate at the doctor, the
added latency, the media node it ran on and its actor's memory; the offer round trip through the API and
the actor; and how long a consult takes to come back after its node is killed, with clients that offer
again every half second (the pages retry with a growing backoff, and first have to notice the loss).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from proxy.bench.live import _consults, _cpus, _memory_mb, clip_frames, serving, summarise

#: Clients offer again this often while the consult is being placed anew.
RETRY_S = 0.5


def _where(room: dict[str, str]) -> dict[str, Any]:
    import ray

    from proxy.cluster.actor import NAMESPACE, actor_name

    return ray.get(ray.get_actor(actor_name(room["room"]), NAMESPACE).ready.remote(), timeout=30)


async def _offer(base: str, room: dict[str, str], role: str, session: aiohttp.ClientSession, deadline: float,
                 **kwargs: Any) -> Any:
    """A client of ``role`` connected to the consult, offering again every RETRY_S while the API answers 503."""
    from proxy.consult.client import ConsultClient

    while True:
        client = ConsultClient(base, room["room"], room[f"{role}_token"], role, **kwargs)
        try:
            await client.connect(session)
            return client
        except RuntimeError as exc:
            await client.close()
            if " 503 " not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(RETRY_S)


async def _recovery(cluster: Any, base: str, room: dict[str, str], frames: list[Any], timeout: float = 90.0
                    ) -> dict[str, Any]:
    """Connect to ``room``, kill its node, and time the way back: an answer to an offer, then masked frames."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + timeout
        doctor = await _offer(base, room, "doctor", session, deadline)
        patient = await _offer(base, room, "patient", session, deadline, frames=frames)
        clients = [doctor, patient]
        try:
            while len(doctor.params()) < 30:
                if time.monotonic() > deadline:
                    raise SystemExit("maskproxy bench: the consult did not start for the recovery test")
                await asyncio.sleep(0.1)
            before = await asyncio.to_thread(_where, room)
            cluster.kill_node(before["node"])
            killed = time.monotonic()
            deadline = killed + timeout
            doctor = await _offer(base, room, "doctor", session, deadline)
            answered = time.monotonic() - killed
            patient = await _offer(base, room, "patient", session, deadline, frames=frames)
            clients += [doctor, patient]
            while not doctor.params():
                if time.monotonic() > deadline:
                    raise SystemExit(f"maskproxy bench: no masked frame within {timeout:.0f} s of the node's death")
                await asyncio.sleep(0.05)
            back = time.monotonic() - killed
            after = await asyncio.to_thread(_where, room)
        finally:
            for client in clients:
                await client.close()
    return {"killed_node": _node_index(cluster, before["node"]), "restarted_on": _node_index(cluster, after["node"]),
            "offer_answered_s": round(answered, 1), "masked_frames_s": round(back, 1)}


def _node_index(cluster: Any, node_id: str) -> int:
    """1-based position of a media node in the order it joined."""
    return next(i for i, node in enumerate(cluster.nodes, 1) if node.node_id == node_id)


def run_cluster_live(args: argparse.Namespace, clip: Path, size: tuple[int, int]) -> dict[str, Any]:
    from proxy.cluster.local import LOOPBACK_ENVIRONMENT, LocalCluster

    print(f"live --cluster: starting a head and {args.consults + 1} media nodes on 127.0.0.1", flush=True)
    start = time.monotonic()
    with LocalCluster(media_nodes=args.consults + 1, slots=1, cpus=1) as cluster:
        print(f"  cluster up in {time.monotonic() - start:.1f} s", flush=True)
        environment = {**LOOPBACK_ENVIRONMENT, "MASKPROXY_CLUSTER": cluster.address}
        with serving(args, environment) as (server, base, _key):
            print(f"live --cluster: {args.consults} consult(s) at {size[0]}x{size[1]} for {args.seconds:.0f} s",
                  flush=True)
            raw = asyncio.run(_consults(base, _key, clip, size, args.consults, args.seconds, server.pid,
                                        _cpus(args.client_cpus)))
            placed = [_where(room) for room in raw["rooms"]]
            report = summarise(raw["samples"], args.consults)
            for entry in report["consults"]:
                where = placed[entry["consult"]]
                entry["node"] = _node_index(cluster, where["node"])
                entry["actor_rss_mb"] = round(_memory_mb(where["pid"])[1], 1)
            report["api_peak_rss_mb"] = report.pop("peak_rss_mb")
            report.pop("peak_rss_mb_per_consult")
            report["offer_ms"], report["state_ms"] = raw["offer_ms"], raw["state_ms"]
            print("  recovery: killing the node of consult 0 ...", flush=True)
            report["node_death"] = asyncio.run(_recovery(cluster, base, raw["rooms"][0], clip_frames(clip, size, 90)))
    report["samples"] = raw["samples"]
    report["size"] = f"{size[0]}x{size[1]}"
    report["mode"] = "cluster"
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    return report
