"""One consult as an async Ray actor on a media node: a :class:`~proxy.consult.rooms.Room` and its expiry.

The actor is detached and named ``maskproxy-consult-<room>`` (namespace ``maskproxy``), so any API process
finds it and it outlives the process that created it. Ray re-creates it from its constructor's arguments
when its node dies (``max_restarts``), which is why the room id, both tokens and the absolute creation time
are arguments: a restarted consult is the same consult, with no peers until the pages offer again, and
its lifetime still counts from when it was opened. The patient's camera reaches this process (through
aiortc, directly or via TURN) and nothing else of it leaves: what leaves is the Room's masked track, and
the calls below answer with SDP, roles and counters only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from proxy.avatar.renderer import rasterise_inline
from proxy.consult.config import Config
from proxy.consult.logs import setup_logging
from proxy.consult.metrics import Metrics
from proxy.consult.rooms import IdlePictures, OfferError, Room, RoomClosed

log = logging.getLogger(__name__)

NAMESPACE = "maskproxy"
NAME_PREFIX = "maskproxy-consult-"
#: The custom resource a media node declares once per consult it may hold (``ray start --resources``).
RESOURCE = "maskproxy_consult"
#: Longest wait between expiry checks (shorter when the configured timeouts are short).
EXPIRY_CHECK_S = 5.0


@dataclass(frozen=True)
class ConsultSpec:
    """What makes a consult the same consult after a restart on another node."""

    room: str
    patient_token: str
    doctor_token: str
    created: float  #: wall-clock time it was opened (time.time()), for its maximum lifetime

    @property
    def name(self) -> str:
        return actor_name(self.room)


def actor_name(room: str) -> str:
    return NAME_PREFIX + room


class ConsultActor:
    """A consult's Room on this node. Calls that act for a page carry its token, checked here where the room lives."""

    def __init__(self, spec: ConsultSpec, config: Config, pipeline_factory: Callable[[], object] | None = None) -> None:
        setup_logging(config.log_level, config.log_json)
        rasterise_inline()
        context = ray.get_runtime_context()
        self.spec = spec
        self.config = config
        self.node = context.get_node_id()
        self.restarted = bool(context.was_current_actor_reconstructed)
        self.room = Room(spec.room, config, Metrics(), pipeline_factory)
        self.room.patient_token, self.room.doctor_token = spec.patient_token, spec.doctor_token
        # its lifetime counts from when it was opened, also after a restart (the pages are warned before the end)
        self.room.expires_at = time.monotonic() + config.room_max_lifetime - (time.time() - spec.created)
        self._warm = asyncio.ensure_future(asyncio.to_thread(IdlePictures.neutral, 640, 480))
        self._expiry = asyncio.ensure_future(self._expire())
        log.info("room %s: %s on node %s", spec.room, "restarted" if self.restarted else "placed", self.node[:12])

    async def ready(self) -> dict[str, Any]:
        """Where the consult runs, once it can answer offers (the neutral avatar drawn)."""
        await self._warm
        return {"node": self.node, "address": ray.util.get_node_ip_address(), "restarted": self.restarted,
                "pid": os.getpid()}

    async def role_for(self, token: str) -> str | None:
        return self.room.role_for(token)

    async def answer(self, token: str, role: str, sdp: str) -> dict[str, Any]:
        """The answer to ``role``'s offer, or ``{"error", "closed"}`` when the offer cannot be used."""
        if self.room.role_for(token) != role:
            return {"error": "wrong token for this room", "closed": False, "denied": True}
        await self._warm
        try:
            answer = await self.room.answer(role, sdp)
        except RoomClosed as exc:
            return {"error": str(exc), "closed": True}
        except OfferError as exc:
            return {"error": str(exc), "closed": False}
        return {"sdp": answer.sdp, "type": answer.type}

    async def state(self, token: str) -> dict[str, Any] | None:
        """The room state for a holder of either token; None for any other token."""
        return self.room.state() if self.room.role_for(token) is not None else None

    async def info(self) -> dict[str, Any]:
        """For the operator's metrics: where it runs, who is connected, the frame rate (nothing secret)."""
        state = self.room.state()
        return {"node": self.node, "fps": state["mask"]["fps"],
                "peers": {role: state[role]["state"] for role in ("patient", "doctor")}}

    async def close(self) -> None:
        """End the consult: every peer closed, no worker left. The caller then kills the actor."""
        self._expiry.cancel()
        await self.room.close()

    async def _expire(self) -> None:
        """Close the consult when nobody joined for ``room_idle_timeout`` or after ``room_max_lifetime``, then
        remove this actor for good (so that Ray does not start it again)."""
        config = self.config
        step = min(EXPIRY_CHECK_S, config.room_idle_timeout / 4, config.room_max_lifetime / 4)
        while True:
            await asyncio.sleep(step)
            room = self.room
            idle = not room.peers and time.monotonic() - room.last_active > config.room_idle_timeout
            if idle or time.time() - self.spec.created > config.room_max_lifetime:
                break
        log.info("room %s: expired (%s)", self.spec.room, "idle" if idle else "maximum lifetime")
        try:
            await self.room.close("expired")
        finally:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
