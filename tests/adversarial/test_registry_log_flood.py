"""Defect 10: every bad message made one warning line (100 000 bad messages: 23.7 MB of
log).

Now per-message warnings go through :class:`sef.logthrottle.LogThrottle`: the first few in
full, then one summary line per busy source and one for the rest every 10 s ("N bad
messages from X in the last 10 s: reasons ..."). 100 000 bad messages from a real agent's
topics and from 100 made-up ids, through real Mosquitto into a real EMS, make less than
50 kB of log (everything the EMS logs at INFO and above is counted), and the EMS keeps
working.
"""

from __future__ import annotations

import asyncio
import logging

from registry_stack import DEMO, TOPICS, battery, start_stack

from support import wait_for

N = 100_000
LIMIT_BYTES = 50_000


class ByteCounter(logging.Handler):
    """Counts the bytes of the formatted log lines (as the CLI prints them)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.bytes = 0
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.bytes += len(line.encode()) + 1
        if len(self.lines) < 1000:
            self.lines.append(line)


def bad_messages() -> list[tuple[str, bytes]]:
    """Topic and payload of every kind of bad message, to cycle through."""
    return [
        (TOPICS.prop("bat-1", DEMO, "Telemetry"), b"\xff\xfe not json"),
        (TOPICS.prop("bat-1", DEMO, "Telemetry"), b'{"v":2,"value":1}'),
        (TOPICS.about("bat-1"), b'{"v":1,"about":"not an object"}'),
        (TOPICS.status("bat-1"), b'{"v":1,"state":"sleeping","bdseq":1}'),
        (TOPICS.signal("bat-1", DEMO, "Alarm"), b"[1,2,3]"),
        *((TOPICS.status(f"ghost-{i:03d}"), b"{not json" + b"x" * i) for i in range(100)),
    ]


async def test_bad_message_flood_makes_a_bounded_log(broker_url: str) -> None:
    sef_log = logging.getLogger("sef")
    counter = ByteCounter()
    level = sef_log.level
    sef_log.setLevel(logging.INFO)
    sef_log.addHandler(counter)
    stack = await start_stack(broker_url)
    agent = await battery(broker_url, "bat-1", stack.ems)
    try:
        ems = stack.ems
        kinds = bad_messages()
        before = ems.registry.bad_messages
        counter.bytes = 0
        for i in range(N):
            topic, payload = kinds[i % len(kinds)]
            stack.rogue.publish(topic, payload, qos=0)
            if i % 1000 == 999:
                await asyncio.sleep(0.005)

        def done() -> bool:
            seen = ems.registry.bad_messages - before
            assert counter.bytes < LIMIT_BYTES, (
                f"{counter.bytes} bytes of log after {seen} bad messages "
                f"({counter.bytes / max(seen, 1):.0f} bytes each)"
            )
            return seen >= N

        await wait_for(done, 100.0)
        ok = await stack.http.post(
            "/agents/bat-1/commands", json={"cmds": [["charge", 4, 60]], "timeout_s": 5}
        )
        assert ok.status_code == 200 and ok.json()["status"] == "ok", ok.text
        ems.registry.flush_logs()  # the summary of the last window, now
        print(f"{N} bad messages: {counter.bytes} bytes of log, {len(counter.lines)} lines")
        text = "\n".join(counter.lines)
        assert counter.bytes < LIMIT_BYTES, (counter.bytes, text[:3000])
        assert "bad messages from bat-1 in the last 10 s" in text, text[:3000]
        assert "other sources" in text
        assert ems.registry.get("bat-1").online is True  # type: ignore[union-attr]
    finally:
        sef_log.removeHandler(counter)
        sef_log.setLevel(level)
        await agent.stop()
        await stack.stop()


def test_log_throttle_api() -> None:
    """The helper itself: a burst in full, then one summary per window and source."""
    from sef.logthrottle import LogThrottle  # (here: the flood test runs without it too)

    t = [0.0]
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.logthrottle")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.setLevel(logging.WARNING)
    throttle = LogThrottle(logger, "bad messages", burst=3, top=2, clock=lambda: t[0])
    for i in range(1000):
        throttle.warn(f"agent-{i % 4}", "not JSON", "bad message %d: %s", i, "x" * 1000)
    assert len(lines) == 3
    assert all(len(line) < 300 for line in lines)  # long arguments are cut
    t[0] = 10.0
    throttle.warn("agent-0", "not JSON", "bad message %d", 1000)  # a new window
    assert lines[3:6] == [
        "250 bad messages from agent-3 in the last 10 s (not logged one by one): "
        "reasons: not JSON ×250",
        "249 bad messages from agent-0 in the last 10 s (not logged one by one): "
        "reasons: not JSON ×249",
        "498 bad messages from 2 other sources in the last 10 s (not logged one by one): "
        "reasons: not JSON ×498",
    ]
    assert lines[6] == "bad message 1000"
    assert (throttle.total, throttle.suppressed) == (1001, 997)
    throttle.flush()
    assert len(lines) == 7  # nothing suppressed since
