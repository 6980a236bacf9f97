"""The package's shape: few modules at the top, subpackages whose imports point one way, data in the wheel."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from proxy.bench.live import free_port
from tests.conftest import ROOT, SHARED

PACKAGE = ROOT / "proxy"


def _unit(module: str) -> str | None:
    """The layout unit a module belongs to: ``proxy.<top module or subpackage>``, None outside the package."""
    parts = module.split(".")
    if parts[0] != "proxy":
        return None
    return "proxy" if len(parts) == 1 else f"proxy.{parts[1]}"


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Edges between layout units, from every import in the source (including those inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        source = _unit(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # ``from proxy import x`` imports the unit proxy.x when x is a module or subpackage
                targets = [f"{base}.{alias.name}" if (PACKAGE / alias.name).exists()
                           or (PACKAGE / f"{alias.name}.py").exists() else base for alias in node.names] \
                    if base == "proxy" else [base]
            for target in targets:
                unit = _unit(target)
                if unit and unit != source and unit != "proxy":
                    graph[source].add(unit)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_through_three_units() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_few_modules_at_the_top_and_subpackages_below() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert len(top) <= 8, top
    assert {"params.py", "pipeline.py", "cli.py", "__main__.py"} <= set(top)
    assert len(subpackages) >= 4, subpackages
    for name in subpackages:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and "Offers" in doc, f"proxy/{name}/__init__.py must say what it owns and offers"


def test_no_import_cycle_between_subpackages() -> None:
    graph = import_graph()
    assert "proxy.tracking" in graph["proxy.avatar"]  # the graph sees real edges
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"
    # the stages point one way: consult -> pipeline -> avatar -> tracking -> params
    assert not graph["proxy.tracking"] & {"proxy.avatar", "proxy.pipeline", "proxy.consult"}
    assert not graph["proxy.avatar"] & {"proxy.pipeline", "proxy.consult"}
    assert graph["proxy.params"] == set()
    assert [unit for unit, targets in graph.items() if "proxy.cli" in targets] == ["proxy.__main__"]


def test_every_subpackage_is_packaged() -> None:
    """A subpackage missing from pyproject's list would be absent from a wheel (and only fail there)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p.parent) for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"


def test_installed_wheel_finds_models_shaders_and_pages(tmp_path: Path) -> None:
    """A non-editable install, run from outside the checkout: track a clip, serve and answer /readyz."""
    clip = SHARED / "videos" / "d0.mp4"
    if not clip.exists():
        pytest.skip(f"test data not found at {clip} (the shared data set lives beside the checkout)")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(ROOT)], check=True, capture_output=True, timeout=300)
    assert (site / "proxy" / "data" / "models" / "face_landmark.onnx").exists()
    env = {k: v for k, v in os.environ.items() if k != "MASKPROXY_HOME"} | {"PYTHONPATH": str(site)}
    run = tmp_path / "run"
    run.mkdir()
    where = subprocess.run([sys.executable, "-c", "import proxy.resources as r; print(r.ROOT)"], cwd=run, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)
    tracked = subprocess.run([sys.executable, "-m", "proxy", "track", str(clip)], cwd=run, env=env,
                             capture_output=True, text=True, timeout=120)
    assert tracked.returncode == 0, tracked.stderr
    lines = tracked.stdout.splitlines()
    assert len(lines) > 50 and '"face": true' in lines[10]

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=run, env=env | {"MASKPROXY_API_KEY": "k" * 32}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and status != 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    status = response.status
                    body = response.read().decode()
            except OSError:
                time.sleep(0.3)
        assert status == 200, "the installed server never answered /readyz"
        assert "ready" in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/patient", timeout=5) as response:
            assert b"<html" in response.read().lower()
    finally:
        server.terminate()
        server.wait(timeout=20)
