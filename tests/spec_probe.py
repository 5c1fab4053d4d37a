"""A raw caller for the protocol-spec tests (tests/protocol_spec/): it publishes call
payloads byte for byte, as a vendor's or a hostile client would, and keeps the replies."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sef.agents import Agent, method
from sef.bus import BusClient, Message, Topics
from sef.clock import RealClock
from sef.interface import DEMO_INTERFACE, Variant

TOPICS = Topics()


class RecordingAgent(Agent):
    """Records the EnergyMethod calls it executes."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.executed: list[list[tuple[str, int, int]]] = []

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        self.executed.append(cmds)


class RawCaller:
    """Publishes calls (any JSON, any bytes) and collects every reply as a JSON object."""

    def __init__(self, url: str) -> None:
        self.client_id = f"caller-{uuid.uuid4().hex[:8]}"
        self.reply_topic = TOPICS.reply(self.client_id)
        self.replies: list[dict[str, Any]] = []
        self.bus = BusClient(url, self.client_id, on_message=self._on_message)

    def _on_message(self, message: Message) -> None:
        self.replies.append(json.loads(message.payload))

    async def __aenter__(self) -> RawCaller:
        await self.bus.subscribe(self.reply_topic)
        await self.bus.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.stop()

    def call(
        self, arguments: list[Any], /, *, exp_in_s: float = 30.0, **keys: Any
    ) -> dict[str, Any]:
        """A valid version-1 call object asking for a reply; ``keys`` override or add keys
        (a value of ``None`` removes the key)."""
        now = RealClock().now()
        obj: dict[str, Any] = {
            "v": 1,
            "id": uuid.uuid4().hex,
            "ts": now,
            "exp": now + exp_in_s,
            "args": arguments,
            "reply_to": self.reply_topic,
            "sender": self.client_id,
        }
        obj.update(keys)
        return {k: v for k, v in obj.items() if v is not None}

    def send(
        self,
        agent_id: str,
        payload: dict[str, Any] | bytes,
        interface: str = DEMO_INTERFACE,
        member: str = "EnergyMethod",
    ) -> None:
        """Publish ``payload`` (an object is sent as JSON) on the agent's call topic."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.bus.publish(TOPICS.call(agent_id, interface, member), data)

    def replies_to(self, call_id: str) -> list[dict[str, Any]]:
        return [r for r in self.replies if r.get("id") == call_id]
