"""mDNS is shared by every process on the machine: tests that advertise a broker hold a
shared lock, a test that discovers *any* broker (no name) holds it exclusively, so
parallel test workers (pytest-xdist) cannot hand it another test's broker."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

LOCK_PATH = Path(tempfile.gettempdir()) / "sef-tests-mdns.lock"


@contextlib.asynccontextmanager
async def mdns_lock(exclusive: bool = False) -> AsyncIterator[None]:
    """Hold the machine-wide mDNS test lock (shared, or exclusive)."""
    with LOCK_PATH.open("a") as handle:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
