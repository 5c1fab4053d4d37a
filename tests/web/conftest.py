"""Fixtures of the dashboard browser tests (the stack itself is in web_stack.py)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from web_stack import (
    CHROMIUM,
    CHROMIUM_ARGS,
    WebStack,
    bounded,
    start_web_stack,
    stop_web_stack,
)


@pytest.fixture
async def web_stack(broker_url: str, tmp_path: Path) -> AsyncIterator[WebStack]:
    """Mosquitto, an EMS with a SQLite store and its API, three batteries, three water
    heaters."""
    running = await start_web_stack(broker_url, tmp_path / "ems.db")
    yield running
    await stop_web_stack(running)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (make system-deps)")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await bounded("browser", chromium.close())
