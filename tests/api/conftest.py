"""Fixtures of the API tests (the stack itself is in api_stack.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from api_stack import Stack, start_stack, stop_stack


@pytest.fixture
async def stack(broker_url: str, db_url: str) -> AsyncIterator[Stack]:
    """The whole stack with a store; runs once on SQLite and once on PostgreSQL."""
    running = await start_stack(broker_url, db_url)
    yield running
    await stop_stack(running)


@pytest.fixture
async def stack_no_store(broker_url: str) -> AsyncIterator[Stack]:
    """The stack with an EMS that has no store."""
    running = await start_stack(broker_url, None)
    yield running
    await stop_stack(running)
