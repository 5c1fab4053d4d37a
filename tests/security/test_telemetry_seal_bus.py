"""Signed telemetry on a real Mosquitto: honest windows verify; a forged property update
published on the agent's topic by another client (a plaintext broker stands in for a
compromised one) fails its window with a clear log line; another agent's seal is
refused; telemetry no seal covers is reported; verdicts reach the store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from seal_support import TelemetryAgent, make_ca
from sef.agents import AgentError
from sef.bus import BusClient, PropertyUpdate, Topics
from sef.ems import EMS
from sef.ems._seals import AgentSeals
from sef.ems.store import Store
from sef.interface import DEMO_INTERFACE, Variant, to_json
from sef.security import Security, TelemetrySealer, TrustStore
from support import is_online, wait_for

T = Topics()


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TrustStore, dict[str, Security]]:
    ca, creds = make_ca(tmp_path / "ca", "bat-1", "bat-2")
    return ca.trust_store(), creds


def forged_update(seq: int) -> bytes:
    value = to_json("a{sv}", {"TimeStamp": Variant("u", 7), "Sys_SOC": Variant("d", 99.0)})
    return PropertyUpdate(value, 1.0, seq).to_payload()


async def test_honest_windows_verify(
    broker_url: str, pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, creds = pki
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    async with EMS(broker_url, "ems-seal", require_signed_telemetry=trust, keepalive_s=2) as ems:
        agent = TelemetryAgent(
            "bat-1", broker_url, sign_telemetry=creds["bat-1"], seal_window_s=0.2, keepalive_s=2
        )
        await agent.start()
        await wait_for(lambda: is_online(ems, "bat-1"), 3.0)
        for _ in range(20):
            agent.report()
        await agent.stop()  # seals the open window before its goodbye
        assert ems.seals is not None
        state = ems.seals.agents["bat-1"]
        await wait_for(lambda: state.verified_messages == 22, 5.0)  # 2 at birth + 20
        assert state.failed_windows == state.refused_seals == 0
        assert state.verified_windows >= 1 and not state.pending
    assert caplog.text == ""


async def test_forged_update_from_another_client_fails_its_window(
    broker_url: str, pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, creds = pki
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    async with EMS(broker_url, "ems-seal", require_signed_telemetry=trust, keepalive_s=2) as ems:
        assert ems.seals is not None
        agent = TelemetryAgent(
            "bat-1",
            broker_url,
            sign_telemetry=creds["bat-1"],
            seal_window_s=60.0,
            seal_window_messages=6,
            keepalive_s=2,
        )
        await agent.start()
        state = ems.seals.agents.setdefault("bat-1", AgentSeals())
        await wait_for(lambda: len(state.pending) == 2, 3.0)  # the birth's two properties
        rogue = BusClient(broker_url, "rogue-seal")
        await rogue.start()
        topic = T.prop("bat-1", DEMO_INTERFACE, "Telemetry")
        rogue.publish(topic, forged_update(1), retain=True)  # seq 1: the About's, unused
        await wait_for(lambda: len(state.pending) == 3, 3.0)
        for _ in range(4):  # the window is full at 6 messages: the agent seals it
            agent.report()
        await wait_for(lambda: state.failed_windows == 1, 3.0)
        assert "agent bat-1: telemetry seq 0..7" in caplog.text
        assert "1 more message(s) than sealed: injected" in caplog.text
        # racing the agent to its next seq: two different messages with one seq
        rogue.publish(topic, forged_update(agent.session.seq), retain=True)
        await wait_for(lambda: len(state.pending) == 1, 3.0)
        for _ in range(6):
            agent.report()
        await wait_for(lambda: state.failed_windows == 2, 3.0)
        assert f"two different messages with seq {agent.session.seq - 6}" in caplog.text
        # the attack over, the next window verifies again
        for _ in range(6):
            agent.report()
        await wait_for(lambda: state.verified_windows == 1, 3.0)
        assert state.verified_messages == 6
        await rogue.stop()
        await agent.stop()


async def test_seal_signed_by_another_agent_is_refused(
    broker_url: str, pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, creds = pki
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    async with EMS(broker_url, "ems-seal", require_signed_telemetry=trust, keepalive_s=2) as ems:
        seals = ems.seals
        assert seals is not None
        rogue = BusClient(broker_url, "rogue-seal")
        await rogue.start()
        topic = T.prop("bat-1", DEMO_INTERFACE, "Telemetry")
        rogue.publish(topic, forged_update(5))
        forger = TelemetrySealer(creds["bat-2"])  # a real agent's key, not bat-1's
        forger.start_session(1)
        forger.add(topic, 5, forged_update(5))
        seal = forger.seal()
        assert seal is not None
        rogue.publish(T.seal("bat-1"), seal)
        await wait_for(lambda: "bat-1" in seals.agents, 3.0)
        state = seals.agents["bat-1"]
        await wait_for(lambda: state.refused_seals == 1, 3.0)
        assert "seal on the topic of agent 'bat-1' is signed by agent 'bat-2'" in caplog.text
        assert state.verified_windows == 0 and len(state.pending) == 1
        await rogue.stop()


async def test_unsealed_telemetry_is_reported_and_verdicts_are_stored(
    broker_url: str,
    pki: tuple[TrustStore, dict[str, Security]],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    trust, creds = pki
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    store = Store.open(f"sqlite:///{tmp_path / 'ems.db'}")
    ems = EMS(broker_url, "ems-seal", require_signed_telemetry=trust, keepalive_s=2, store=store)
    await ems.start()
    assert ems.seals is not None
    ems.seals.max_wait_s = 0.5
    signer = TelemetryAgent(
        "bat-1", broker_url, sign_telemetry=creds["bat-1"], seal_window_s=0.2, keepalive_s=2
    )
    unsigned = TelemetryAgent("bat-2", broker_url, keepalive_s=2)  # does not sign
    await signer.start()
    await unsigned.start()
    await wait_for(lambda: ems.seals is not None and "bat-2" in ems.seals.agents, 3.0)
    await wait_for(lambda: ems.seals is not None and ems.seals.totals()["failed_windows"] >= 1, 5.0)
    await wait_for(
        lambda: ems.seals is not None and ems.seals.totals()["verified_windows"] >= 1, 5.0
    )
    assert "agent bat-2: telemetry seq 2..3 of session" in caplog.text
    assert "no seal within 0.5 s" in caplog.text
    assert ems.seals.agents["bat-1"].failed_windows == 0
    await signer.stop()
    await unsigned.stop()
    await ems.stop()
    assert "seal_ok" in {e["kind"] for e in store.agent_events("bat-1")}
    failed = [e for e in store.agent_events("bat-2") if e["kind"] == "seal_failed"]
    assert failed and "no seal within 0.5 s" in failed[0]["detail"]
    store.close()


async def test_windows_verify_across_a_rebirth_and_a_reconnection(
    broker_url: str, pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, creds = pki
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    async with EMS(broker_url, "ems-seal", require_signed_telemetry=trust, keepalive_s=2) as ems:
        seals = ems.seals
        assert seals is not None
        agent = TelemetryAgent(
            "bat-1", broker_url, sign_telemetry=creds["bat-1"], seal_window_s=0.2, keepalive_s=2
        )
        await agent.start()
        await wait_for(lambda: is_online(ems, "bat-1"), 3.0)
        agent.report()
        first = agent.session.bdseq
        assert ems.rebirth("bat-1")  # same session, seq from 0 again
        await wait_for(lambda: seals.agents["bat-1"].verified_messages >= 5, 5.0)
        await agent.bus._client.disconnect()  # type: ignore[union-attr]  # a new session
        await wait_for(lambda: agent.session.bdseq != first and agent.bus.connected, 10.0)
        agent.report()
        await wait_for(lambda: seals.agents["bat-1"].verified_messages >= 8, 5.0)
        state = seals.agents["bat-1"]
        assert state.failed_windows == state.refused_seals == 0
        assert state.bdseq == agent.session.bdseq
        await agent.stop()
    assert caplog.text == ""


def test_an_agent_signs_only_with_its_own_certificate(
    broker_url: str, pki: tuple[TrustStore, dict[str, Security]]
) -> None:
    _, creds = pki
    with pytest.raises(AgentError, match="needs credentials"):
        TelemetryAgent("bat-1", broker_url, sign_telemetry=True)
    with pytest.raises(AgentError, match="signed by 'bat-2'"):
        TelemetryAgent("bat-1", broker_url, sign_telemetry=creds["bat-2"])
    with pytest.raises(AgentError, match="window_s must be > 0"):
        TelemetryAgent("bat-1", broker_url, sign_telemetry=creds["bat-1"], seal_window_s=0)
