"""Fixtures of the browser tests: the fake camera's clip (made once per run) and Chromium playing it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.browser import ARGS, CHROMIUM, make_camera


@pytest.fixture(scope="session")
def camera(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_camera(tmp_path_factory.mktemp("camera"))


@pytest.fixture
async def browser(camera: dict[str, Any]) -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (sudo apt-get install -y chromium); "
                    "the browser test needs it and CI installs it")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=[*ARGS, f"--use-file-for-fake-video-capture={camera['path']}"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def plain_browser() -> AsyncIterator[Any]:
    """Chromium whose fake camera is its own test pattern (for a doctor: no face, no shared clip on screen)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (sudo apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()
