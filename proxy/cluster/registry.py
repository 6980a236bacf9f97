"""The cluster backend of the HTTP API: consults are Ray actors on media nodes, and this process holds none.

An API process in cluster mode keeps no consult state, so several can serve behind one load balancer,
and any of them can stop and start again without a consult noticing. Creating a consult asks Ray for
an actor that needs one ``maskproxy_consult`` slot; a consult that cannot be placed within
``placement_timeout`` is removed again and the API answers 503. Everything else is a call to the
consult's named actor: a call that finds it restarting on another node (its node died) answers 503
"reconnecting", and the pages retry until it is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from prometheus_client import Gauge
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

from proxy.cluster.actor import NAME_PREFIX, NAMESPACE, RESOURCE, ConsultActor, ConsultSpec, actor_name
from proxy.consult.backend import Answer, AtCapacity, Gone, Load, NewConsult, Unavailable
from proxy.consult.config import Config
from proxy.consult.metrics import Metrics
from proxy.consult.rooms import OfferError, RoomClosed

log = logging.getLogger(__name__)

#: Seconds a new consult may take to be placed and answer; then it is removed and the API answers 503.
PLACEMENT_TIMEOUT = 10.0
#: Seconds an actor call may take (an offer: up to ANSWER_TIMEOUT, as aiortc gathers its candidates).
CALL_TIMEOUT = 5.0
ANSWER_TIMEOUT = 20.0
#: Actor handles kept for reuse (a handle stays valid across the actor's restarts).
HANDLES = 4096
#: Restarts of a consult's actor after node deaths (-1: as often as a node dies).
MAX_RESTARTS = -1
#: The room ids this API issues (secrets.token_urlsafe(9)); anything else is not looked up.
ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
RECONNECTING = "the consult is reconnecting (its media server is being replaced); try again in a few seconds"

RemoteConsultActor = ray.remote(ConsultActor)


class RemoteConsult:
    """A consult's actor behind the API's :class:`~proxy.consult.backend.Consult` calls."""

    def __init__(self, registry: ClusterRegistry, room_id: str, handle: ActorHandle) -> None:
        self.registry = registry
        self.id = room_id
        self.handle = handle
        self._token: str | None = None

    async def role_for(self, token: str) -> str | None:
        role = await self.registry.call(self.id, self.handle.role_for.remote(token))
        self._token = token if role is not None else None
        return role

    async def answer(self, role: str, sdp: str) -> Answer:
        if self._token is None:
            raise PermissionError("answer() without a room token")
        result = await self.registry.call(self.id, self.handle.answer.remote(self._token, role, sdp), ANSWER_TIMEOUT)
        if "error" in result:
            raise (RoomClosed if result["closed"] else OfferError)(result["error"])
        return Answer(result["sdp"], result["type"])

    async def state(self) -> dict[str, Any]:
        if self._token is None:
            raise PermissionError("state() without a room token")
        state = await self.registry.call(self.id, self.handle.state.remote(self._token))
        if state is None:
            raise Gone("no such room")
        return state


class ClusterRegistry:
    """Consults as detached, named actors in Ray namespace ``maskproxy``, placed on nodes with a consult slot."""

    def __init__(self, config: Config, metrics: Metrics, placement_timeout: float = PLACEMENT_TIMEOUT) -> None:
        self.config = config
        self.metrics = metrics
        self.placement_timeout = placement_timeout
        #: Builds each consult's masking pipeline on its node (None: the real one); pickled with the actor's
        #: arguments, so it must be importable there. A hook for tests and benchmarks.
        self.pipeline_factory: Callable[[], object] | None = None
        #: What a consult's actor is told (Ray keeps it to restart the actor): no API key or metrics token.
        self._actor_config = dataclasses.replace(config, api_key=None, metrics_token=None)
        self._handles: OrderedDict[str, ActorHandle] = OrderedDict()
        self._connected = False
        registry = metrics.registry
        self.node_consults = Gauge("maskproxy_node_consults", "Open consults per media node", ["node", "address"],
                                   registry=registry)
        self.node_slots = Gauge("maskproxy_node_consult_slots", "Consult slots per media node", ["node", "address"],
                                registry=registry)
        self.free_slots = Gauge("maskproxy_consult_slots_free", "Free consult slots in the cluster", registry=registry)
        self.unreachable = Gauge("maskproxy_consults_unreachable", "Consults whose actor did not answer (restarting)",
                                 registry=registry)

    # -- lifetime --------------------------------------------------------
    async def start(self) -> str:
        """Join the cluster as a driver (unless this process already is one, as in the tests)."""
        if not ray.is_initialized():
            ray.init(address=self.config.cluster, namespace=NAMESPACE, log_to_driver=False,
                     logging_level=logging.WARNING)
            self._connected = True
        resources = await asyncio.to_thread(ray.cluster_resources)
        log.info("cluster %s: %d consult slots", self.config.cluster or "(this process's)",
                 int(resources.get(RESOURCE, 0)))
        return "on the cluster's media nodes"

    async def close(self) -> None:
        """Leave the cluster; the consults stay where they are (another API process serves them)."""
        self._handles.clear()
        if self._connected:
            await asyncio.to_thread(ray.shutdown)
            self._connected = False

    # -- consults --------------------------------------------------------
    async def create(self) -> NewConsult:
        if (await self.load()).free < 1:
            raise AtCapacity("at capacity: no free consult slot in the cluster")
        spec = ConsultSpec(secrets.token_urlsafe(9), secrets.token_urlsafe(24), secrets.token_urlsafe(24), time.time())
        handle = RemoteConsultActor.options(
            name=spec.name, namespace=NAMESPACE, lifetime="detached", num_cpus=0, resources={RESOURCE: 1},
            max_restarts=MAX_RESTARTS, max_task_retries=0,
        ).remote(spec, self._actor_config, self.pipeline_factory)
        try:
            where = await asyncio.wait_for(handle.ready.remote(), self.placement_timeout)
        except TimeoutError:
            await asyncio.to_thread(ray.kill, handle, no_restart=True)
            log.warning("room %s: not placed within %.0f s; removed", spec.room, self.placement_timeout)
            raise AtCapacity("at capacity: no media node could take the consult") from None
        except RayActorError as exc:  # it could not start there, e.g. a node without maskproxy
            await asyncio.to_thread(ray.kill, handle, no_restart=True)
            log.error("room %s: the consult could not start on its media node; removed (%s)", spec.room,
                      str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise AtCapacity("no media node could start the consult; see the media nodes' logs") from None
        self._remember(spec.room, handle)
        log.info("room %s: created on node %s", spec.room, where["node"][:12])
        return NewConsult(spec.room, spec.patient_token, spec.doctor_token)

    async def find(self, room_id: str) -> RemoteConsult | None:
        handle = await self._handle(room_id)
        return RemoteConsult(self, room_id, handle) if handle is not None else None

    async def remove(self, room_id: str) -> bool:
        handle = await self._handle(room_id)
        if handle is None:
            return False
        try:
            await asyncio.wait_for(handle.close.remote(), CALL_TIMEOUT)
        except (TimeoutError, RayActorError):
            pass  # restarting or gone: nothing of it to close gracefully
        await asyncio.to_thread(ray.kill, handle, no_restart=True)
        self._handles.pop(room_id, None)
        log.info("room %s: removed", room_id)
        return True

    async def call(self, room_id: str, ref: Awaitable[Any], timeout: float = CALL_TIMEOUT) -> Any:
        """Await an actor call: Unavailable while the actor restarts (or does not answer), Gone once it is dead."""
        try:
            return await asyncio.wait_for(ref, timeout)
        except ActorUnavailableError:
            raise Unavailable(RECONNECTING) from None
        except ActorDiedError:
            self._handles.pop(room_id, None)
            raise Gone("no such room") from None
        except (TimeoutError, GetTimeoutError, RayActorError):
            raise Unavailable(RECONNECTING) from None

    async def where(self, room_id: str) -> dict[str, Any] | None:
        """The node a consult runs on (for operators and the bench), None if there is no such consult."""
        handle = await self._handle(room_id)
        return await self.call(room_id, handle.ready.remote()) if handle is not None else None

    # -- capacity and metrics ---------------------------------------------
    async def load(self) -> Load:
        """Slots on live media nodes, and consults (named actors: placed, restarting or being placed). Counted from
        the actor table rather than Ray's resource view, which lags: a slot freed a moment ago is free here."""
        names, nodes = await asyncio.to_thread(lambda: (self._names(), ray.nodes()))
        capacity = int(sum(node["Resources"].get(RESOURCE, 0) for node in nodes if node["Alive"]))
        media_nodes = sum(1 for node in nodes if node["Alive"] and node["Resources"].get(RESOURCE, 0) > 0)
        return Load(len(names), capacity, max(capacity - len(names), 0), {"media_nodes": media_nodes})

    async def refresh_metrics(self) -> None:
        """Consults per node and in total, slots, peers and frame rate, asked of every consult's actor at once."""
        names = await asyncio.to_thread(self._names)
        handles = [await self._handle(name[len(NAME_PREFIX):]) for name in names]
        infos = await asyncio.gather(*(asyncio.wait_for(h.info.remote(), CALL_TIMEOUT) for h in handles if h),
                                     return_exceptions=True)
        found = [info for info in infos if isinstance(info, dict)]
        nodes = {node["NodeID"]: node for node in await asyncio.to_thread(ray.nodes) if node["Alive"]}
        per_node = Counter(info["node"] for info in found)
        self.node_consults.clear()
        self.node_slots.clear()
        for node_id, node in nodes.items():
            slots = node["Resources"].get(RESOURCE, 0)
            if slots or per_node.get(node_id):
                labels = (node_id[:12], node["NodeManagerAddress"])
                self.node_slots.labels(*labels).set(slots)
                self.node_consults.labels(*labels).set(per_node.get(node_id, 0))
        self.metrics.consults.set(len(names))
        self.unreachable.set(len(names) - len(found))
        self.free_slots.set(max(sum(node["Resources"].get(RESOURCE, 0) for node in nodes.values()) - len(names), 0))
        for role in ("patient", "doctor"):
            self.metrics.peers.labels(role).set(sum(info["peers"][role] == "connected" for info in found))
        self.metrics.fps.set(sum(info["fps"] for info in found))

    # -- handles ---------------------------------------------------------
    def _names(self) -> list[str]:
        return [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
                if entry["namespace"] == NAMESPACE and entry["name"].startswith(NAME_PREFIX)]

    async def _handle(self, room_id: str) -> ActorHandle | None:
        if not ROOM_ID.fullmatch(room_id):
            return None
        handle = self._handles.get(room_id)
        if handle is None:
            try:
                handle = await asyncio.to_thread(ray.get_actor, actor_name(room_id), NAMESPACE)
            except ValueError:  # no live actor of that name
                return None
            self._remember(room_id, handle)
        else:
            self._handles.move_to_end(room_id)
        return handle

    def _remember(self, room_id: str, handle: ActorHandle) -> None:
        self._handles[room_id] = handle
        self._handles.move_to_end(room_id)
        while len(self._handles) > HANDLES:
            self._handles.popitem(last=False)
