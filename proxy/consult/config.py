"""Server configuration: defaults, then an optional TOML file, then MASKPROXY_* variables, then flags.

Every field below can be set in all three places; ``maskproxy serve --help``
and the README list them. Durations are seconds.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from proxy.recording.sealed import parse_key

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_FRAME_PIXELS = 320 * 240
MAX_DECODE_PIXELS = 4096 * 2304  #: 4K: the most max_decode_pixels may allow
RECORDING_MODES = ("off", "allowed", "required")


@dataclass
class Config:
    """Everything ``maskproxy serve`` can be told."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: Bearer key for creating and ending consults. Generated and printed when unset.
    api_key: str | None = None
    #: Base URL for the links handed out (e.g. https://consult.clinic.example); default: the request's own.
    public_url: str | None = None
    #: TLS: certificate and key files (PEM), or a generated self-signed certificate for a LAN or a trial.
    cert: str | None = None
    key: str | None = None
    self_signed: bool = False
    #: STUN/TURN server URLs (stun:host:port, turn:host:port?transport=udp, turns:...).
    ice_servers: list[str] = field(default_factory=list)
    #: Shared secret of a TURN server's REST API (coturn use-auth-secret): short-lived credentials.
    turn_secret: str | None = None
    #: Lifetime of generated TURN credentials.
    turn_ttl: float = 3600.0
    #: Static TURN credentials, when the TURN server has no REST secret.
    turn_username: str | None = None
    turn_password: str | None = None
    max_consults: int = 8
    room_idle_timeout: float = 30 * 60.0
    room_max_lifetime: float = 4 * 3600.0
    #: A peer whose connection stays disconnected this long is released.
    peer_timeout: float = 20.0
    #: Largest request body accepted (bytes).
    max_body: int = 64 * 1024
    #: API requests per client address: sustained rate per second and burst.
    rate_limit: float = 10.0
    rate_burst: int = 40
    #: Reverse proxies (addresses or CIDRs) whose X-Forwarded-For names the client; from anyone else it is ignored.
    trusted_proxies: list[str] = field(default_factory=list)
    #: Bearer token for /metrics and /readyz; when unset they answer loopback clients only.
    metrics_token: str | None = None
    #: Camera frames larger than this many pixels are downscaled on arrival.
    max_frame_pixels: int = 1280 * 720
    #: Largest picture a client may make the proxy decode (pixels, as its VP8 keyframes declare it): advertised
    #: as max-fs in the answer; bigger keyframes are dropped before decoding (proxy.consult.decode_guard).
    max_decode_pixels: int = 1920 * 1088
    #: Ignore offers' ICE candidates in private ranges (RFC 1918, fc00::/7, 100.64.0.0/10) and mDNS names: for a
    #: proxy on the internet, so that no token holder can make it probe the clinic's network (proxy.consult.candidates).
    refuse_private_candidates: bool = False
    #: Frame rate of the patient's masked self-view (the doctor gets every masked frame); 0 = all. The self-view
    #: shares the doctor's encoded stream, so it costs no encoding either way; any value above 0 sends it every other
    #: frame (the stream's base temporal layer, which makes the doctor's picture slightly less sharp per bit).
    self_view_fps: float = 0.0
    #: ONNX Runtime threads per consult.
    threads: int = 1
    #: Eye crops averaged per eye (proxy.tracking.tracker): 4 cut gaze jitter by a quarter, for about 5 ms per frame.
    eye_samples: int = 1
    #: Avatar supersampling (proxy.avatar.renderer): 2 or 4 antialias every edge; about k*k times the render cost.
    supersample: int = 1
    #: Read the avatar back every this many frames to trim its gaze (proxy.avatar.trim); 0 = never. Each reading is a
    #: tracking pass of the avatar (about a third of a frame's masking), so live it runs on a few frames a second.
    trim_every: int = 8
    log_json: bool = False
    log_level: str = "INFO"
    #: Where consults are recorded, one folder per recording (proxy.recording); unset, this server records nothing.
    recordings_dir: str | None = None
    #: 32 random bytes (64 hex digits or base64) that encrypt recordings at rest; environment or TOML only, never a
    #: flag, never logged.
    recordings_key: str | None = None
    #: Recordings that started this many days ago are deleted; unset, they are kept.
    retention_days: float | None = None
    #: ``off``: never; ``allowed``: the doctor may record once the patient consents; ``required``: every consult asks
    #: the patient at its start and records as soon as they agree (proxy.consult.recording_link).
    recording: str = "allowed"
    #: Also record the patient's sound, where they consent to it separately (off by default: a voice identifies).
    recording_audio: bool = False
    #: Run consults as Ray actors on a cluster's media nodes: whatever ``ray.init(address=...)`` accepts (the head's
    #: host:port, ``auto``, ``ray://head:10001``); unset, every consult runs in this process (proxy.cluster).
    cluster: str | None = None

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def update(self, values: dict[str, Any], source: str) -> None:
        """Set fields from ``values`` (unknown names are an error), converting strings as needed."""
        types = {f.name: f.type for f in fields(self)}
        for name, value in values.items():
            key = name.replace("-", "_")
            if key not in types:
                raise ValueError(f"{source}: unknown setting {name!r}")
            if value is None:
                continue
            setattr(self, key, _convert(key, str(types[key]), value, source))

    @classmethod
    def load(cls, path: Path | None = None, environ: dict[str, str] | None = None,
             flags: dict[str, Any] | None = None) -> Config:
        """Defaults < TOML file < MASKPROXY_* environment < command-line flags."""
        config = cls()
        if path is not None:
            try:
                data = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ValueError(f"{path}: {exc}") from None
            config.update(data.get("maskproxy", data), str(path))
        environ = os.environ if environ is None else environ
        env = {name: environ[f"MASKPROXY_{name.upper()}"] for name in cls.names()
               if f"MASKPROXY_{name.upper()}" in environ and environ[f"MASKPROXY_{name.upper()}"] != ""}
        config.update(env, "environment")
        config.update({k: v for k, v in (flags or {}).items() if v is not None}, "command line")
        config.check()
        return config

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port must be 1-65535")
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together")
        if self.cert and self.self_signed:
            raise ValueError("use either --cert/--key or --self-signed")
        for url in self.ice_servers:
            if url.split(":", 1)[0] not in ("stun", "stuns", "turn", "turns"):
                raise ValueError(f"ICE server {url!r} must start with stun:, stuns:, turn: or turns:")
        for name in ("max_consults", "max_body", "rate_burst", "threads", "eye_samples", "supersample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.trim_every < 0:
            raise ValueError("trim_every must be 0 (never) or more")
        if self.max_frame_pixels < MIN_FRAME_PIXELS:
            raise ValueError(f"max_frame_pixels must be at least {MIN_FRAME_PIXELS} (320x240)")
        if not MIN_FRAME_PIXELS <= self.max_decode_pixels <= MAX_DECODE_PIXELS:
            raise ValueError(f"max_decode_pixels must be between {MIN_FRAME_PIXELS} (320x240) and {MAX_DECODE_PIXELS}")
        for name in ("turn_ttl", "room_idle_timeout", "room_max_lifetime", "peer_timeout", "rate_limit"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):  # also rejects NaN
                raise ValueError(f"{name} must be a positive number of {'per second' if name == 'rate_limit' else 's'}")
        if not 0 <= self.self_view_fps <= 120:  # also rejects NaN
            raise ValueError("self_view_fps must be between 0 (every frame) and 120")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.recording not in RECORDING_MODES:
            raise ValueError(f"recording must be one of {', '.join(RECORDING_MODES)}")
        if self.recording == "required" and (not self.recordings_dir or self.cluster):
            raise ValueError("recording = required needs recordings_dir, and consults in this process (no cluster)")
        if self.retention_days is not None and not 0 < self.retention_days < float("inf"):
            raise ValueError("retention_days must be a positive number of days (unset: keep recordings)")
        if self.recordings_key is not None:
            parse_key(self.recordings_key)  # its message never echoes the key
        if self.cluster is not None and (not self.cluster.strip() or not self.cluster.isprintable()):
            raise ValueError("cluster must be a Ray address such as head:6379, auto or ray://head:10001")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        if (self.turn_username is None) != (self.turn_password is None):
            raise ValueError("turn_username and turn_password go together")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError("api_key must be at least 16 characters")
        if self.metrics_token is not None and (len(self.metrics_token) < 16 or not self.metrics_token.isascii()):
            raise ValueError("metrics_token must be at least 16 ASCII characters")
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or CIDR network") from None


def _convert(name: str, kind: str, value: Any, source: str) -> Any:
    try:
        if "list" in kind:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        if "bool" in kind:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {name} has an invalid value {value!r}") from None
