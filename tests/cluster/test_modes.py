"""Choosing the backend: the embedded default never loads Ray; ``cluster`` comes from a flag, the environment or
TOML; asking for a cluster without the cluster extra is a one-line error. No Ray cluster is started here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.consult.config import Config
from tests.conftest import ROOT

EMBEDDED = """
import asyncio, sys
from aiohttp.test_utils import TestClient, TestServer
from proxy.consult.config import Config
from proxy.consult.server import create_app

async def main():
    app = create_app(Config(api_key="embedded-test-key-0123456789"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.post("/api/rooms", headers={"Authorization": "Bearer embedded-test-key-0123456789"})
        assert response.status == 201, await response.text()
    print("ray" in sys.modules)

asyncio.run(main())
"""


def test_the_embedded_default_never_imports_ray() -> None:
    """A consult opened by ``serve`` without a cluster setting: Ray is not even imported."""
    result = subprocess.run([sys.executable, "-c", EMBEDDED], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_cluster_setting_from_flag_environment_and_file(tmp_path: Path) -> None:
    settings = tmp_path / "maskproxy.toml"
    settings.write_text('[maskproxy]\ncluster = "ray://head.clinic.internal:10001"\n')
    assert Config.load(environ={}).cluster is None
    assert Config.load(settings, environ={}).cluster == "ray://head.clinic.internal:10001"
    assert Config.load(settings, environ={"MASKPROXY_CLUSTER": "10.0.0.5:6379"}).cluster == "10.0.0.5:6379"
    assert Config.load(settings, environ={"MASKPROXY_CLUSTER": "10.0.0.5:6379"},
                       flags={"cluster": "auto"}).cluster == "auto"
    with pytest.raises(ValueError, match="cluster"):
        Config.load(environ={}, flags={"cluster": "  "})


def test_cluster_without_the_extra_is_a_clear_error(tmp_path: Path) -> None:
    """``serve --cluster`` where Ray is not installed: exit status 2 and one line naming the extra."""
    hidden = tmp_path / "ray"
    hidden.mkdir()
    (hidden / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'ray\'", name="ray")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MASKPROXY_API_KEY": "cluster-test-key-0123456789"}
    result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--cluster", "auto"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cluster extra" in result.stderr and "Traceback" not in result.stderr, result.stderr
