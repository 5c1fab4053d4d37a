"""An agent's signal reaches the EMS as a typed ``SignalReceived`` event (real broker)."""

from __future__ import annotations

from sef.agents import Agent
from sef.ems import EMS, Event, SignalReceived
from support import wait_for

ALARM_XML = """<node>
  <interface name="org.example.Alarm">
    <signal name="Alarm">
      <arg name="code" type="u"/>
      <arg name="text" type="s"/>
    </signal>
  </interface>
</node>"""


class AlarmAgent(Agent):
    interfaces = ("org.example.Alarm",)


async def test_emitted_signal_arrives_with_its_arguments(broker_url: str) -> None:
    agent = AlarmAgent(
        "alarm-1", broker_url, interface_xml={"org.example.Alarm": ALARM_XML}, keepalive_s=2
    )
    signals: list[SignalReceived] = []

    def keep(event: Event) -> None:
        if isinstance(event, SignalReceived):
            signals.append(event)

    async with EMS(broker_url, "ems-signal", on_event=keep, keepalive_s=2) as ems:
        await agent.start()
        try:
            await wait_for(
                lambda: (
                    (record := ems.registry.get("alarm-1")) is not None and record.online is True
                ),
                3.0,
            )
            agent.emit_signal("org.example.Alarm", "Alarm", 7, "tank over temperature")
            await wait_for(lambda: bool(signals), 3.0)
        finally:
            await agent.stop()
    assert signals == [
        SignalReceived("alarm-1", "org.example.Alarm.Alarm", [7, "tank over temperature"])
    ]
