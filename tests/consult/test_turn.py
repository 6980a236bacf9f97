"""A consult through a real TURN server (coturn on loopback) with the short-lived REST credentials
the proxy hands out to a room's token holders: both browsers relay-only, so every media packet goes
through coturn."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

from proxy.consult.config import Config
from tests.rtc_client import LocalProxy, NeutralPipeline, camera_pattern, distance, wait_for

KEY = "turn-test-key-0123456789"
SECRET = "turn-shared-secret-for-tests"
REALM = "maskproxy.test"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def coturn() -> Iterator[tuple[int, Path]]:
    """coturn on 127.0.0.1, REST-secret auth, relaying between loopback peers; (port, log file)."""
    binary = shutil.which("turnserver") or ("/usr/bin/turnserver" if Path("/usr/bin/turnserver").exists() else None)
    if binary is None:
        pytest.fail("coturn's turnserver is not installed (apt-get install coturn; .ci/run installs it)")
    port = free_udp_port()
    relay = free_udp_port()
    with tempfile.TemporaryDirectory(prefix="maskproxy-turn-") as folder:
        log = Path(folder) / "turn.log"
        process = subprocess.Popen([
            binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
            f"--min-port={min(relay, 65000)}", f"--max-port={min(relay, 65000) + 20}",
            "--use-auth-secret", f"--static-auth-secret={SECRET}", f"--realm={REALM}",
            "--no-tls", "--no-dtls", "--no-cli", "--no-tcp", "--no-tcp-relay", f"--log-file={log}", "--simple-log",
            "--allow-loopback-peers", "--no-multicast-peers", "--verbose", f"--pidfile={folder}/turn.pid",
            f"--userdb={folder}/turndb",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while "listener opened on" not in (log.read_text(errors="replace") if log.exists() else ""):
                assert process.poll() is None, f"turnserver exited: {log.read_text() if log.exists() else ''}"
                assert time.monotonic() < deadline, "turnserver did not start"
                time.sleep(0.1)
            yield port, log
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_consult_through_coturn_with_rest_credentials(coturn: tuple[int, Path]) -> None:
    port, log = coturn
    url = f"turn:127.0.0.1:{port}?transport=udp"
    config = Config(api_key=KEY, ice_servers=[url], turn_secret=SECRET, turn_ttl=600)
    async with LocalProxy(config, NeutralPipeline) as proxy, aiohttp.ClientSession() as session:
        room = await proxy.create_room(session)
        ice_url = f"{proxy.base}/api/rooms/{room['room']}/ice"
        async with session.get(ice_url) as response:
            assert response.status == 401  # no room token, no TURN credentials
        async with session.get(ice_url, headers={"Authorization": f"Bearer {room['patient_token']}"}) as response:
            assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
            text = await response.text()
        servers = json.loads(text)["ice_servers"]
        assert len(servers) == 1 and servers[0]["urls"] == [url]
        username, credential = servers[0]["username"], servers[0]["credential"]
        expiry, user = username.split(":", 1)
        assert user == room["room"] and 590 <= int(expiry) - time.time() <= 610  # this room's, expiring after turn_ttl
        assert credential == base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
                                              ).decode()
        assert SECRET not in text

        relay_only = RTCConfiguration(iceServers=[RTCIceServer(urls=url, username=username, credential=credential)],
                                      iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        doctor = proxy.client(room, "doctor", configuration=relay_only, thumbs=True)
        patient = proxy.client(room, "patient", frames=[camera_pattern()], fps=15, configuration=relay_only)
        await doctor.connect(session)
        await patient.connect(session)
        try:
            await doctor.wait_connected(20)
            await patient.wait_connected(20)
            live = proxy.registry.get(room["room"])
            await wait_for(lambda: live.stats.frames > 30, 20)
            masked = doctor.receivers["masked"]
            await wait_for(lambda: masked.count > 30, 10)
            # the clients' side of each selected pair is a relayed candidate: the media went through coturn
            assert doctor.selected_pair()[0] == "relay", doctor.selected_pair()
            assert patient.selected_pair()[0] == "relay", patient.selected_pair()
            assert all(distance(t, camera_pattern()) > 60 for t in masked.thumbs)
            await asyncio.sleep(1.0)
            text = log.read_text(errors="replace")
            assert "ALLOCATE" in text and "success" in text, text[-3000:]
            assert "CREATE_PERMISSION" in text or "CHANNEL_BIND" in text, text[-3000:]
        finally:
            await patient.close()
            await doctor.close()
