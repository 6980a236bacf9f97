"""Cluster mode with a real Ray cluster on 127.0.0.1: a head without consult slots and three media nodes with
one slot each (separate Ray processes per node), API app instances in this process as Ray drivers, the
consults' actors with the fast stand-in pipeline, and real aiortc peers for the patient and the doctor.

Placement and capacity, two API instances serving one consult (and one of them going away), DELETE and
expiry leaving no actor behind, and a node's death: the consult comes back on another node, and no frame
the doctor ever received is the camera picture.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from proxy.cluster.local import LOOPBACK_ENVIRONMENT

for _name, _value in LOOPBACK_ENVIRONMENT.items():  # before Ray is imported: nodes stay on 127.0.0.1
    os.environ.setdefault(_name, _value)
ray = pytest.importorskip("ray", reason="cluster mode needs the cluster extra: pip install -e '.[cluster]'")

from proxy.cluster.actor import NAMESPACE, actor_name  # noqa: E402
from proxy.cluster.local import LocalCluster  # noqa: E402
from proxy.cluster.registry import ClusterRegistry  # noqa: E402
from proxy.consult.config import Config  # noqa: E402
from proxy.consult.metrics import Metrics  # noqa: E402
from proxy.consult.server import BACKEND  # noqa: E402
from tests.rtc_client import Client, LocalProxy, NeutralPipeline, camera_pattern, distance, wait_for  # noqa: E402

KEY = "cluster-test-key-0123456789"
FAR = 60.0  #: every frame the doctor receives is at least this far from the camera picture (tests/consult/test_faults)
PLACEMENT = 8.0  #: seconds a consult may take to be placed (a loaded 2-core machine starts Ray workers slowly)


class ClusterProxy(LocalProxy):
    """An API app instance in cluster mode on an ephemeral 127.0.0.1 port; this process is its Ray driver."""

    def __init__(self, config: Config) -> None:
        from aiohttp.test_utils import TestServer

        from proxy.consult.server import create_app

        def backend(config: Config, metrics: Metrics) -> ClusterRegistry:
            registry = ClusterRegistry(config, metrics, placement_timeout=PLACEMENT)
            registry.pipeline_factory = NeutralPipeline
            return registry

        self.config = config
        self.app = create_app(config, backend)
        self.registry = self.app[BACKEND]
        self.server = TestServer(self.app, host="127.0.0.1")
        self.base = ""

    async def post_room(self, session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
        async with session.post(f"{self.base}/api/rooms", headers={"Authorization": f"Bearer {KEY}"}) as response:
            return response.status, await response.json()

    async def delete(self, session: aiohttp.ClientSession, room: dict[str, str]) -> int:
        async with session.delete(f"{self.base}/api/rooms/{room['room']}",
                                  headers={"Authorization": f"Bearer {KEY}"}) as response:
            return response.status

    async def status(self, session: aiohttp.ClientSession, room: dict[str, str]) -> int:
        async with session.get(f"{self.base}/api/rooms/{room['room']}",
                               headers={"Authorization": f"Bearer {room['doctor_token']}"}) as response:
            return response.status

    async def operator(self, session: aiohttp.ClientSession, path: str) -> tuple[int, str]:
        async with session.get(f"{self.base}{path}") as response:
            return response.status, await response.text()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(media_nodes=3, slots=1, fast_failover=True) as local:
        yield local


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def consult_actors() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE]


async def no_actor_left(room: dict[str, str], timeout: float = 10.0) -> None:
    await wait_for(lambda: actor_name(room["room"]) not in consult_actors(), timeout, step=0.1)


async def test_three_consults_on_three_nodes_and_a_fourth_is_refused(cluster: LocalCluster,
                                                                    session: aiohttp.ClientSession) -> None:
    """Each media node has one slot: three consults land on three different nodes, the fourth gets 503 and leaves
    no actor behind; /readyz and /metrics count the slots and the consults per node."""
    async with ClusterProxy(Config(api_key=KEY)) as api:
        status, ready = await api.operator(session, "/readyz")
        assert status == 200 and ready.count('"free": 3') == 1, ready
        rooms = []
        try:
            for _ in range(2):
                start = time.monotonic()
                status, room = await api.post_room(session)
                assert status == 201, room
                rooms.append(room)
                print(f"consult placed and ready in {time.monotonic() - start:.1f} s")
            # Two at once for the last slot: both may pass the check for a free slot; the one Ray cannot place
            # within the placement timeout is removed again and refused.
            start = time.monotonic()
            raced = await asyncio.gather(api.post_room(session), api.post_room(session))
            assert sorted(status for status, _ in raced) == [201, 503], raced
            rooms += [room for status, room in raced if status == 201]
            print(f"two consults for the last slot: one placed, one refused after {time.monotonic() - start:.1f} s")
            nodes = [(await api.registry.where(room["room"]))["node"] for room in rooms]
            assert len(set(nodes)) == 3, nodes
            start = time.monotonic()
            status, body = await api.post_room(session)
            assert status == 503 and "capacity" in body["error"], body
            print(f"the 4th consult refused in {time.monotonic() - start:.2f} s")
            await wait_for(lambda: len(consult_actors()) == 3, 5, step=0.1)  # the refused one is gone
            status, ready = await api.operator(session, "/readyz")
            assert status == 503 and '"free": 0' in ready and '"consults": 3' in ready, ready
            status, metrics = await api.operator(session, "/metrics")
            per_node = [line for line in metrics.splitlines() if line.startswith("maskproxy_node_consults{")]
            assert len(per_node) == 3 and all(line.endswith(" 1.0") for line in per_node), per_node
            assert "maskproxy_consults 3.0" in metrics
        finally:
            for room in rooms:
                assert await api.delete(session, room) == 200
        for room in rooms:
            await no_actor_left(room)


async def test_a_consult_that_cannot_start_is_removed_and_refused(cluster: LocalCluster,
                                                                 session: aiohttp.ClientSession) -> None:
    """A media node that cannot run the consult (here: its pipeline's code is missing there, as on a node without
    maskproxy): the actor is removed again and the API answers 503, leaving no actor and every slot free."""
    missing = types.ModuleType("maskproxy_not_on_the_nodes")  # exists in this process only
    exec("class Pipeline:\n    pass\n", missing.__dict__)
    missing.Pipeline.__module__ = missing.__name__
    sys.modules[missing.__name__] = missing
    try:
        async with ClusterProxy(Config(api_key=KEY)) as api:
            api.registry.pipeline_factory = missing.Pipeline
            before = set(consult_actors())
            start = time.monotonic()
            status, body = await api.post_room(session)
            assert status == 503 and "could start the consult" in body["error"], body
            print(f"a consult that cannot start refused in {time.monotonic() - start:.1f} s")
            await wait_for(lambda: set(consult_actors()) == before, 10, step=0.1)
            assert (await api.registry.load()).free == 3 - len(before)
    finally:
        del sys.modules[missing.__name__]


async def test_two_api_instances_serve_one_consult(cluster: LocalCluster, session: aiohttp.ClientSession) -> None:
    """Created through one API instance, offered to through another: the doctor receives masked frames. The first
    instance then stops, and a new one still finds the consult; DELETE through it leaves no actor."""
    first = ClusterProxy(Config(api_key=KEY))
    async with first, ClusterProxy(Config(api_key=KEY)) as second:
        status, room = await first.post_room(session)
        assert status == 201, room
        doctor = second.client(room, "doctor", thumbs=True)
        patient = second.client(room, "patient", frames=[camera_pattern(160, 120)], fps=15)
        try:
            start = time.monotonic()
            await doctor.connect(session)
            offered = time.monotonic() - start
            await patient.connect(session)
            await wait_for(lambda: "masked" in doctor.receivers and doctor.receivers["masked"].count >= 15, 20)
            print(f"doctor's offer answered through the cluster in {offered * 1000:.0f} ms")
            state = await first.state(session, room)
            assert state["patient"]["connected"] and state["doctor"]["connected"], state
            assert min(distance(t, camera_pattern(160, 120)) for t in doctor.receivers["masked"].thumbs) > FAR
        finally:
            await patient.close()
            await doctor.close()
    async with ClusterProxy(Config(api_key=KEY)) as third:  # both earlier API instances are gone
        assert await third.status(session, room) == 200
        assert await third.delete(session, room) == 200
        await no_actor_left(room)
        assert await third.status(session, room) == 404


async def test_expiry_removes_the_actor(cluster: LocalCluster, session: aiohttp.ClientSession) -> None:
    """A consult nobody joins expires inside its actor, which then removes itself: no actor, and 404."""
    async with ClusterProxy(Config(api_key=KEY, room_idle_timeout=1.0)) as api:
        status, room = await api.post_room(session)
        assert status == 201, room
        assert actor_name(room["room"]) in consult_actors()
        await no_actor_left(room, timeout=15)
        assert await api.status(session, room) == 404


async def offer_until_answered(api: ClusterProxy, session: aiohttp.ClientSession, room: dict[str, str],
                               role: str, timeout: float, **kwargs: Any) -> tuple[Client, list[int]]:
    """Offer as the pages do after a failure, retrying while the API answers 503; the statuses seen before."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        client = api.client(room, role, **kwargs)
        try:
            await client.connect(session)
            return client, seen
        except RuntimeError as exc:  # "offer refused: <status> <body>"
            await client.close()
            status = int(str(exc).split()[2])
            assert status == 503 and "reconnecting" in str(exc), exc
            seen.append(status)
            assert time.monotonic() < deadline, f"still refused after {timeout} s: {exc}"
            await asyncio.sleep(0.5)


async def test_a_consult_survives_its_nodes_death(cluster: LocalCluster, session: aiohttp.ClientSession) -> None:
    """Kill the node of a connected consult: its actor restarts on another node with the same room and tokens,
    the pages' re-offers bring the doctor masked frames again within 30 s, and no frame the doctor received
    before, during or after is the camera picture."""
    camera = camera_pattern(160, 120)
    async with ClusterProxy(Config(api_key=KEY)) as api:
        status, room = await api.post_room(session)
        assert status == 201, room
        old_node = (await api.registry.where(room["room"]))["node"]
        doctor = api.client(room, "doctor", thumbs=True)
        patient = api.client(room, "patient", frames=[camera], fps=15)
        clients = [doctor, patient]
        try:
            await doctor.connect(session)
            await patient.connect(session)
            await wait_for(lambda: "masked" in doctor.receivers and doctor.receivers["masked"].count >= 15, 20)

            cluster.kill_node(old_node)
            killed = time.monotonic()

            # The pages notice the dead connection and offer again until the consult answers: 503 "reconnecting"
            # while it has no node (or the offer waits for it, when it is placed again within the call's timeout).
            doctor2, refused = await offer_until_answered(api, session, room, "doctor", 30, thumbs=True)
            clients.append(doctor2)
            patient2, _ = await offer_until_answered(api, session, room, "patient", 10, frames=[camera], fps=15)
            clients.append(patient2)
            await wait_for(lambda: "masked" in doctor2.receivers and doctor2.receivers["masked"].count >= 15,
                           max(1.0, 30 - (time.monotonic() - killed)))
            recovered = time.monotonic() - killed
            print(f"masked frames again {recovered:.1f} s after the node's death ({len(refused)} offers refused first)")
            assert recovered < 30
            new_node = (await api.registry.where(room["room"]))["node"]
            assert new_node != old_node
            state = await api.state(session, room)  # the same room and tokens after the restart
            assert state["room"] == room["room"] and state["patient"]["connected"]
            received = doctor.receivers["masked"].thumbs + doctor2.receivers["masked"].thumbs
            assert min(distance(t, camera) for t in received) > FAR
        finally:
            for client in clients:
                await client.close()
            assert await api.delete(session, room) == 200
        await no_actor_left(room)


async def test_a_consult_without_a_free_node_waits_and_answers_503(cluster: LocalCluster,
                                                                   session: aiohttp.ClientSession) -> None:
    """Every slot taken, then a consult's node dies: the consult has nowhere to go, and the API answers its
    pages 503 "reconnecting" (never an answer from anywhere else); once a slot frees up, it is back."""
    async with ClusterProxy(Config(api_key=KEY)) as api:
        status, room = await api.post_room(session)
        assert status == 201, room
        fillers = []
        while True:  # take every other slot
            status, filler = await api.post_room(session)
            if status != 201:
                break
            fillers.append(filler)
        assert fillers, "this test needs at least two live media nodes"
        try:
            node = (await api.registry.where(room["room"]))["node"]
            cluster.kill_node(node)
            killed = time.monotonic()
            while True:
                start = time.monotonic()
                status = await api.status(session, room)
                if status == 503:
                    break
                assert status == 200 and time.monotonic() - killed < 20, status  # before Ray notices the death
                await asyncio.sleep(0.5)
            print(f"503 {time.monotonic() - killed:.1f} s after the node's death (the call took "
                  f"{time.monotonic() - start:.1f} s)")
            doctor = api.client(room, "doctor")
            with pytest.raises(RuntimeError, match="503.*reconnecting"):
                await doctor.connect(session)
            await doctor.close()
            assert await api.delete(session, fillers.pop()) == 200

            async def back() -> bool:
                return await api.status(session, room) == 200

            print(f"back {await wait_for(back, 30, step=0.5):.1f} s after a slot freed up")
        finally:
            for filler in fillers:
                assert await api.delete(session, filler) == 200
            assert await api.delete(session, room) == 200
        await no_actor_left(room)
