"""Publisher processes for the cluster benches (``cluster_ingest.py``, ``cluster_workers.py``)."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any


def run_producers(
    produce: Callable[..., None],
    urls: list[str],
    messages: int,
    producers: int,
    *extra: Any,
    timeout_s: float = 400.0,
) -> float:
    """Run ``producers`` processes, process ``i`` calling ``produce(url, first, count,
    *extra, done)`` with its ``url`` round robin over ``urls`` and its share of
    ``messages``; ``produce`` puts ``True`` on ``done`` once every PUBACK came back.
    Returns the wall time from the first start to the last acknowledgement (s)."""
    ctx = mp.get_context("fork")
    done: Any = ctx.Queue()
    share = messages // producers
    procs = [
        ctx.Process(target=produce, args=(urls[i % len(urls)], i * share, share, *extra, done))
        for i in range(producers)
    ]
    start = time.monotonic()
    for proc in procs:
        proc.start()
    oks = [done.get(timeout=timeout_s) for _ in procs]
    for proc in procs:
        proc.join()
    if not all(oks):
        raise RuntimeError("a producer was not acknowledged every message")
    return time.monotonic() - start
