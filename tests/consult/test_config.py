"""Configuration and operations: precedence, validation, ``serve --help``, TLS, readiness,
metrics, and logs that never carry secrets or SDP."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from proxy.bench.live import free_port
from proxy.cli import build_parser, main
from proxy.consult.config import Config
from tests.rtc_client import Client, LocalProxy, camera_pattern, wait_for

KEY = "config-test-key-0123456789"
ROOT = Path(__file__).resolve().parents[2]
METRIC_NAMES = ("maskproxy_consults", "maskproxy_peers", "maskproxy_masked_frames_total",
                "maskproxy_dropped_frames_total", "maskproxy_mask_errors_total", "maskproxy_mask_fps",
                "maskproxy_stage_seconds", "maskproxy_added_latency_seconds", "maskproxy_api_requests_total")



def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "maskproxy.toml"
    toml.write_text('[maskproxy]\nport = 9001\nmax_consults = 3\nrate_limit = 2.5\nice_servers = ["stun:a:3478"]\n'
                    'peer_timeout = 7\n')
    env = {"MASKPROXY_PORT": "9002", "MASKPROXY_MAX_CONSULTS": "4", "MASKPROXY_ICE_SERVERS": "stun:b:1, turn:c:2",
           "MASKPROXY_SELF_SIGNED": "yes", "MASKPROXY_API_KEY": KEY, "MASKPROXY_THREADS": ""}
    config = Config.load(toml, environ=env, flags={"port": 9003, "threads": None})
    assert config.port == 9003  # flag over env over TOML
    assert config.max_consults == 4  # env over TOML
    assert config.rate_limit == 2.5 and config.peer_timeout == 7.0  # TOML over defaults
    assert config.ice_servers == ["stun:b:1", "turn:c:2"] and config.self_signed is True
    assert config.threads == 1 and config.host == "127.0.0.1"  # defaults (an empty variable is unset)
    assert config.api_key == KEY
    # without a section header, keys at the top level work too
    toml.write_text("port = 9004\n")
    assert Config.load(toml, environ={}).port == 9004


@pytest.mark.parametrize("where,values,message", [
    ("env", {"MASKPROXY_PORT": "eighty"}, "port has an invalid value"),
    ("env", {"MASKPROXY_SELF_SIGNED": "maybe"}, "self_signed has an invalid value"),
    ("env", {"MASKPROXY_PORT": "70000"}, "port must be 1-65535"),
    ("env", {"MASKPROXY_RATE_LIMIT": "0"}, "rate_limit must be a positive"),
    ("env", {"MASKPROXY_PEER_TIMEOUT": "nan"}, "peer_timeout must be a positive"),
    ("env", {"MASKPROXY_MAX_FRAME_PIXELS": "100"}, "max_frame_pixels must be at least"),
    ("env", {"MASKPROXY_LOG_LEVEL": "LOUD"}, "log_level must be one of"),
    ("env", {"MASKPROXY_EYE_SAMPLES": "0"}, "eye_samples must be at least 1"),
    ("env", {"MASKPROXY_SUPERSAMPLE": "0"}, "supersample must be at least 1"),
    ("env", {"MASKPROXY_ICE_SERVERS": "http://x"}, "must start with stun:"),
    ("env", {"MASKPROXY_PUBLIC_URL": "consult.example"}, "public_url must start with"),
    ("env", {"MASKPROXY_API_KEY": "short"}, "api_key must be at least 16"),
    ("env", {"MASKPROXY_TURN_USERNAME": "u"}, "turn_username and turn_password go together"),
    ("flags", {"cert": "c.pem"}, "--cert and --key go together"),
    ("toml", "bogus_setting = 1\n", "unknown setting 'bogus_setting'"),
    ("toml", "port = [\n", "maskproxy.toml"),
    ("toml", 'max_consults = "many"\n', "max_consults has an invalid value"),
])
def test_invalid_values_are_clear_errors(tmp_path: Path, where: str, values: object, message: str) -> None:
    toml = tmp_path / "maskproxy.toml"
    if where == "toml":
        toml.write_text(str(values))
    with pytest.raises(ValueError, match=re.escape(message)):
        Config.load(toml if where == "toml" else None, environ=values if where == "env" else {},  # type: ignore
                    flags=values if where == "flags" else None)  # type: ignore[arg-type]


def test_quality_settings_reach_the_consults_pipeline() -> None:
    """The live defaults are one eye crop and no supersampling; a clinic's settings reach each consult's worker."""
    from proxy.consult.worker import MaskWorker

    defaults = Config.load(environ={})
    assert (defaults.eye_samples, defaults.supersample) == (1, 1)
    config = Config.load(environ={"MASKPROXY_EYE_SAMPLES": "4", "MASKPROXY_SUPERSAMPLE": "2"})
    loop = asyncio.new_event_loop()
    try:
        worker = MaskWorker(loop, lambda result: None, eye_samples=config.eye_samples,
                            supersample=config.supersample)
        pipeline = worker._make_pipeline()
        assert pipeline.tracker.eye_samples == 4  # type: ignore[attr-defined]
        assert pipeline.supersample == 2  # type: ignore[attr-defined]
        pipeline.close()  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_cli_reports_a_bad_setting_and_exits_2(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKPROXY_RATE_BURST", "0")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskproxy serve: error:") and "rate_burst must be at least 1" in err
    assert "Traceback" not in err


def test_serve_help_lists_every_setting() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    text = serve.format_help()
    flat = " ".join(text.split())
    for name in Config.names():
        assert f"MASKPROXY_{name.upper()}" in flat, name
        if name not in ("api_key", "metrics_token", "recordings_key"):  # secrets are never flags: they would show in
            # the process list
            assert "--" + name.replace("_", "-").removesuffix("s") in flat, name
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Config.names() if f"| `{name}` |" not in readme]
    assert not missing, f"settings missing from the README's table: {missing}"
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--self-signed" in out.stdout and "--config" in out.stdout


@contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m proxy serve`` on a free loopback port; stdout and stderr go to the process's pipe."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port), *args], cwd=ROOT,
                               env={**os.environ, "MASKPROXY_API_KEY": KEY, "PYTHONUNBUFFERED": "1", **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_ready(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes]) -> None:
    async def ready() -> bool:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else "exited"
        try:
            async with session.get(url, ssl=False) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(ready, 30)


async def test_self_signed_serves_https(tmp_path: Path) -> None:
    """HTTPS with a generated certificate, whose private key is not left on disk while the server runs."""
    with serving("--self-signed", env={"TMPDIR": str(tmp_path)}) as (process, port):
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, f"https://127.0.0.1:{port}/healthz", process)
            keys = [p for p in tmp_path.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
            assert not keys and not list(tmp_path.glob("maskproxy-tls-*")), keys
            async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=False) as response:
                assert response.status == 200 and await response.json() == {"ok": True}
                assert response.headers["Strict-Transport-Security"].startswith("max-age=")  # HSTS over TLS
            with pytest.raises(aiohttp.ClientError):  # a verifying client refuses the self-signed certificate
                async with session.get(f"https://127.0.0.1:{port}/healthz"):
                    pass
            with pytest.raises(aiohttp.ClientError):  # and there is no plain HTTP
                async with session.get(f"http://127.0.0.1:{port}/healthz"):
                    pass


async def test_readyz_and_metrics() -> None:
    async with LocalProxy(Config(api_key=KEY, max_consults=1)) as proxy, aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.base}/readyz") as response:
            body = await response.json()
            assert response.status == 200 and body["ready"] is True and body["capacity"] == 1
        await proxy.create_room(session)
        async with session.get(f"{proxy.base}/readyz") as response:
            body = await response.json()
            assert response.status == 503 and body["ready"] is False and body["consults"] == 1
        async with session.get(f"{proxy.base}/metrics") as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        for name in METRIC_NAMES:
            assert re.search(rf"^(# TYPE )?{name}\b", text, re.M), name
        assert re.search(r"^maskproxy_consults 1\.0$", text, re.M)
        assert re.search(r'^maskproxy_api_requests_total\{status="2xx"\} 1\.0$', text, re.M)


async def test_logs_carry_no_tokens_keys_or_sdp() -> None:
    """A whole consult through ``serve`` (plain and JSON logs at INFO): the log has its events but no
    token, API key, TURN secret or SDP; nor does a bad offer's error path echo the SDP."""
    secret = "turn-secret-never-logged-0123"
    for json_logs in (False, True):
        args = ["--log-level", "INFO"] + (["--log-json"] if json_logs else [])
        with serving(*args, env={"MASKPROXY_TURN_SECRET": secret}) as (process, port):
            base = f"http://127.0.0.1:{port}"
            clients: list[Client] = []
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, f"{base}/readyz", process)
                async with session.post(f"{base}/api/rooms", headers={"Authorization": f"Bearer {KEY}"}) as r:
                    room = await r.json()
                async with session.post(f"{base}/api/rooms/{room['room']}/offer",
                                        json={"token": room["patient_token"], "role": "patient", "type": "offer",
                                              "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\na=ice-pwd:LEAKME\r\n"}) as r:
                    assert r.status == 400
                async with session.get(f"{base}/api/rooms/{room['room']}",
                                       headers={"Authorization": f"Bearer {room['doctor_token']}"}):
                    pass
                try:
                    clients = [Client(base, room["room"], room["doctor_token"], "doctor"),
                               Client(base, room["room"], room["patient_token"], "patient",
                                      frames=[camera_pattern(160, 120)], fps=15)]
                    for client in clients:
                        await client.connect(session)
                    doctor = clients[0]
                    await wait_for(lambda d=doctor: d.receivers.get("masked") and d.receivers["masked"].count > 10,
                                   20)
                    sdps = [c.pc.localDescription.sdp for c in clients] + [c.pc.remoteDescription.sdp for c in clients]
                finally:
                    for client in clients:
                        await client.close()
                async with session.delete(f"{base}/api/rooms/{room['room']}",
                                          headers={"Authorization": f"Bearer {KEY}"}) as r:
                    assert r.status == 200
            await asyncio.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=10)[0].decode()
        assert f"room {room['room']}: patient joined" in output, output[-3000:]
        assert "closed" in output
        for secret_text in (KEY, secret, room["patient_token"], room["doctor_token"], "LEAKME"):
            assert secret_text not in output, f"{secret_text[:6]}... in the log"
        for marker in ("v=0", "a=ice-pwd", "a=fingerprint", "a=candidate", "m=video"):
            assert marker not in output, f"SDP ({marker}) in the log"
        pwds = {m for sdp in sdps for m in re.findall(r"a=ice-pwd:(\S+)", sdp)}
        assert pwds and not any(pwd in output for pwd in pwds)
        if json_logs:
            lines = [line for line in output.splitlines() if line.startswith("{")]
            assert lines and all('"level"' in line for line in lines)

