"""Server configuration: one dataclass, filled from defaults, a TOML file, the environment and flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Config:
    """Everything ``maskproxy serve`` can be told. Durations are seconds."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: Bearer key for creating and ending consults (MASKPROXY_API_KEY). Generated and printed when unset.
    api_key: str | None = None
    #: Base URL for the links handed out (e.g. https://consult.clinic.example); default: the request's own.
    public_url: str | None = None
    max_consults: int = 8
    room_idle_timeout: float = 30 * 60.0
    room_max_lifetime: float = 4 * 3600.0
    #: A peer whose connection stays disconnected this long is released.
    peer_timeout: float = 20.0
    #: Largest request body accepted (bytes).
    max_body: int = 64 * 1024
    #: ONNX Runtime threads per consult.
    threads: int = 1
    #: STUN/TURN servers as RTCIceServer dicts ({"urls": [...], "username"?, "credential"?}).
    ice_servers: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        config = cls(api_key=os.environ.get("MASKPROXY_API_KEY") or None)
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        return config
