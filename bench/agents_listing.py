"""Size and time of ``GET /agents`` with many agents (issue 11, defect 6).

Fills an EMS registry with ``--agents`` agents (birth, About, one telemetry property each,
as a virtual battery publishes them), serves the API on a free port (no broker needed:
the listing reads the registry only) and times, best of ``--rounds``:

* ``GET /agents`` as the dashboard and ``sef agents --api`` ask for it (one page with the
  paginated API; every agent before it);
* walking every page with ``limit=1000`` and ``X-Next-Cursor`` (paginated API only).

    .venv/bin/python bench/agents_listing.py [--agents 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time

import httpx

from sef.bus import About, InterfaceRef, Message, PropertyUpdate, Status, Topics
from sef.ems import EMS
from sef.ems.api import ApiAuth, serve_api
from sef.interface import DEMO_INTERFACE, builtin_xml

TOPICS = Topics()
SHA = hashlib.sha256(builtin_xml(DEMO_INTERFACE).encode()).hexdigest()


def fill(ems: EMS, n: int) -> None:
    """``n`` agents in the registry, each online with an About and a telemetry value."""
    now = time.time()
    fields = {
        "AppId": "0" * 32,
        "DefaultLanguage": "en",
        "DeviceName": "battery",
        "DeviceId": "x",
        "AppName": "SEF virtual battery",
        "Manufacturer": "SEF",
        "ModelNumber": "sef-vb",
        "SoftwareVersion": "0.1.0",
    }
    telemetry = {
        "TimeStamp": ["u", int(now)],
        "Sys_Rated_Energy": ["d", 60.0],
        "Sys_SOC": ["d", 55.2],
        "Sys_Power_kW": ["d", -4.0],
        "Sys_Energy_kWh": ["d", 33.1],
        "Event": ["s", "charge"],
        "Event_Rate_kW": ["d", 4.0],
        "State": ["s", "charging"],
        "Comm_Fault": ["b", False],
    }
    for i in range(n):
        agent = f"bat-{i:06d}"
        bdseq = int(now * 1000)
        for message in (
            Message(TOPICS.status(agent), Status(True, bdseq, now, 10, 0).to_payload(), 1, True),
            Message(
                TOPICS.about(agent),
                About(
                    fields, [InterfaceRef(DEMO_INTERFACE, SHA)], ["feeder-1"], bdseq, now, 1
                ).to_payload(),
                1,
                True,
            ),
            Message(
                TOPICS.prop(agent, DEMO_INTERFACE, "Telemetry"),
                PropertyUpdate(telemetry, now, 2).to_payload(),
                1,
                True,
            ),
        ):
            ems.registry.handle(message, now)


def open_ems() -> EMS:
    """An EMS that admits every agent (the bench measures the listing, not admission)."""
    try:
        from sef.ems import Admission  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # the code before issue 11
        return EMS("mqtt://127.0.0.1:1", "bench", announce=False, request_rebirth=False)
    return EMS(
        "mqtt://127.0.0.1:1",
        "bench",
        announce=False,
        request_rebirth=False,
        admission=Admission.open(),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ems = open_ems()
    started = time.perf_counter()
    fill(ems, args.agents)
    print(f"{len(ems.registry.agents)} agents in {time.perf_counter() - started:.1f} s")
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=600.0) as http:
            best, size, count, total = 1e9, 0, 0, "-"
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                response = await http.get("/agents")
                best = min(best, time.perf_counter() - t0)
                size, count = len(response.content), len(response.json())
                total = response.headers.get("x-total-count", "-")
            print(
                f"GET /agents: {size / 1e6:.3f} MB, {count} agents (X-Total-Count {total}), "
                f"best of {args.rounds}: {best * 1000:.0f} ms"
            )
            if "x-total-count" not in response.headers:
                return
            best_walk, pages, walked, walked_bytes = 1e9, 0, 0, 0
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                cursor, pages, walked, walked_bytes = None, 0, 0, 0
                while True:
                    params: dict[str, str | int] = {"limit": 1000}
                    if cursor:
                        params["cursor"] = cursor
                    page = await http.get("/agents", params=params)
                    pages += 1
                    walked += len(page.json())
                    walked_bytes += len(page.content)
                    cursor = page.headers.get("x-next-cursor")
                    if not cursor:
                        break
                best_walk = min(best_walk, time.perf_counter() - t0)
            print(
                f"every page (limit=1000): {pages} pages, {walked} agents, "
                f"{walked_bytes / 1e6:.1f} MB, best of {args.rounds}: {best_walk:.2f} s "
                f"({best_walk / pages * 1000:.0f} ms a page)"
            )
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
