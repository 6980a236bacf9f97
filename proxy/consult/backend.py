"""Where the HTTP API finds its consults: in this process (the embedded default) or elsewhere (a cluster).

The server sees consults only through :class:`Backend` and :class:`Consult`, whose calls are all
awaitable, so the same handlers serve rooms held here (:class:`LocalBackend`, over today's
:class:`~proxy.consult.rooms.RoomRegistry`) and rooms held by actors on other machines
(``proxy.cluster.registry.ClusterRegistry``, injected by ``maskproxy serve --cluster``). Token checks
stay where the room lives: a :class:`Consult` answers who a token is and re-checks it on every call
made with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.consult.config import Config
from proxy.consult.metrics import Metrics
from proxy.consult.rooms import IdlePictures, Room, RoomRegistry


class AtCapacity(Exception):
    """No consult can be opened now (503)."""


class Unavailable(Exception):
    """The consult exists but cannot be reached now, e.g. it is being moved to another machine (503)."""


class Gone(Exception):
    """The consult ended while the request was under way (404, as for a room that never existed)."""


@dataclass(frozen=True)
class NewConsult:
    """What creating a consult hands back: its id and the two role tokens."""

    room: str
    patient_token: str
    doctor_token: str


@dataclass(frozen=True)
class Answer:
    """An SDP answer (the fields of aiortc's RTCSessionDescription that the API returns)."""

    sdp: str
    type: str


@dataclass(frozen=True)
class Load:
    """Open consults and room for more, for ``/readyz``."""

    consults: int
    capacity: int
    free: int
    detail: dict[str, Any]


class Consult(Protocol):
    """One consult as the API sees it, for one request. ``role_for`` first; the other calls carry the checked
    token, and the room checks it again."""

    id: str

    async def role_for(self, token: str) -> str | None: ...

    async def answer(self, role: str, sdp: str) -> Answer: ...

    async def state(self) -> dict[str, Any]: ...


class Backend(Protocol):
    """The consults an API process serves."""

    async def start(self) -> str:
        """Get ready; returns what draws the pictures (the GL renderer, or where it runs)."""
        ...

    async def create(self) -> NewConsult:
        """Open a consult; :class:`AtCapacity` when there is no room for it."""
        ...

    async def find(self, room_id: str) -> Consult | None:
        """The consult ``room_id``, None if there is none; :class:`Unavailable` if it cannot be reached now."""
        ...

    async def remove(self, room_id: str) -> bool: ...

    async def load(self) -> Load: ...

    async def refresh_metrics(self) -> None: ...

    async def close(self) -> None: ...


class LocalConsult:
    """A :class:`Room` of this process behind the :class:`Consult` calls."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.id = room.id
        self._token: str | None = None

    async def role_for(self, token: str) -> str | None:
        role = self.room.role_for(token)
        self._token = token if role is not None else None
        return role

    async def answer(self, role: str, sdp: str) -> Answer:
        if self._token is None or self.room.role_for(self._token) != role:
            raise PermissionError("answer() without a token of that role")
        answer = await self.room.answer(role, sdp)
        return Answer(answer.sdp, answer.type)

    async def state(self) -> dict[str, Any]:
        if self._token is None:
            raise PermissionError("state() without a room token")
        return self.room.state()


class LocalBackend:
    """The embedded default: every consult in this process, in a :class:`RoomRegistry` (up to ``max_consults``)."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.registry = RoomRegistry(config, metrics)

    async def start(self) -> str:
        self.registry.start()
        await asyncio.to_thread(IdlePictures.neutral, 640, 480)
        return IdlePictures.status

    async def create(self) -> NewConsult:
        if len(self.registry.rooms) >= self.config.max_consults:
            raise AtCapacity("at capacity: too many consults open")
        room = self.registry.create()
        return NewConsult(room.id, room.patient_token, room.doctor_token)

    async def find(self, room_id: str) -> LocalConsult | None:
        room = self.registry.get(room_id)
        return LocalConsult(room) if room is not None else None

    async def remove(self, room_id: str) -> bool:
        return await self.registry.remove(room_id)

    async def load(self) -> Load:
        consults, capacity = len(self.registry.rooms), self.config.max_consults
        return Load(consults, capacity, max(capacity - consults, 0), {})

    async def refresh_metrics(self) -> None:
        self.registry.refresh_metrics()

    async def close(self) -> None:
        await self.registry.close()
