"""Signed telemetry without a broker: seals, their verification, and the EMS's window
bookkeeping fed message by message (the bus tests are in test_telemetry_seal_bus.py)."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seal_support import make_ca
from sef.bus import Message, PropertyUpdate, Status, Topics
from sef.ems._seals import SealChecker, _seq
from sef.security import (
    SealVerifier,
    Security,
    SecurityError,
    TelemetrySealer,
    TrustStore,
    sign_seal,
)
from sef.security._telemetry_seal import SealClaims

T = Topics()
TOPIC = T.prop("bat-1", "edu.pdx.powerlab.demo", "Telemetry")
BDSEQ = 1_700_000_000_000


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrustStore, dict[str, Security]]:
    root = tmp_path_factory.mktemp("pki")
    ca, creds = make_ca(root / "ca", "bat-1", "bat-2")
    _, other = make_ca(root / "other", "bat-1")
    creds["foreign"] = other["bat-1"]
    return ca.trust_store(), creds


def telemetry(seq: int, value: float = 1.0) -> Message:
    payload = PropertyUpdate({"Sys_SOC": ["d", value]}, 1.0, seq).to_payload()
    return Message(TOPIC, payload, 1)


def birth(bdseq: int = BDSEQ) -> Message:
    return Message(T.status("bat-1"), Status(True, bdseq, 1.0, 10, 0).to_payload(), 1)


def sealed(sealer: TelemetrySealer, checker: SealChecker, messages: list[Message]) -> None:
    """The agent publishes ``messages`` (seq from their payloads); the EMS receives them."""
    for message in messages:
        seq = json.loads(message.payload)["seq"]
        sealer.add(message.topic, seq, message.payload)
        checker.handle(message)


def seal_message(sealer: TelemetrySealer, agent: str = "bat-1") -> Message:
    payload = sealer.seal()
    assert payload is not None
    return Message(T.seal(agent), payload, 1)


def test_honest_windows_verify_and_chain(
    pki: tuple[TrustStore, dict[str, Security]],
) -> None:
    trust, creds = pki
    checker = SealChecker(trust, T)
    sealer = TelemetrySealer(creds["bat-1"])
    sealer.start_session(BDSEQ)
    checker.handle(birth())
    sealed(sealer, checker, [telemetry(s) for s in range(2, 7)])
    assert checker.handle(seal_message(sealer))[0] is True
    sealed(sealer, checker, [telemetry(s) for s in range(7, 9)])
    checker.handle(seal_message(sealer))
    state = checker.agents["bat-1"]
    assert (state.verified_windows, state.verified_messages, state.failed_windows) == (2, 7, 0)
    assert state.last_verified_seq == 8 and not state.pending


def test_altered_injected_and_dropped_windows_fail_with_reasons(
    pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, creds = pki
    checker = SealChecker(trust, T)
    sealer = TelemetrySealer(creds["bat-1"])
    sealer.start_session(BDSEQ)
    checker.handle(birth())
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    # altered in transit: the EMS gets another value for seq 3
    for s in range(2, 5):
        sealer.add(TOPIC, s, telemetry(s).payload)
        checker.handle(telemetry(s, 99.0 if s == 3 else 1.0))
    checker.handle(seal_message(sealer))
    assert "telemetry seq 0..4" in caplog.text and "altered" in caplog.text
    # injected: one message more than the agent sealed
    sealer.add(TOPIC, 6, telemetry(6).payload)
    checker.handle(telemetry(5))
    checker.handle(telemetry(6))
    checker.handle(seal_message(sealer))
    assert "1 more message(s) than sealed: injected" in caplog.text
    # dropped: a sealed message never arrived
    sealed(sealer, checker, [telemetry(7)])
    sealer.add(TOPIC, 8, telemetry(8).payload)
    checker.handle(seal_message(sealer))
    assert "1 sealed message(s) missing: dropped" in caplog.text
    state = checker.agents["bat-1"]
    assert (state.failed_windows, state.verified_windows) == (3, 0)


def test_a_dropped_seal_and_a_replayed_seal(
    pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, creds = pki
    checker = SealChecker(trust, T)
    sealer = TelemetrySealer(creds["bat-1"])
    sealer.start_session(BDSEQ)
    checker.handle(birth())
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    sealed(sealer, checker, [telemetry(2), telemetry(3)])
    first = seal_message(sealer)  # the broker drops it
    sealed(sealer, checker, [telemetry(4)])
    checker.handle(seal_message(sealer))
    assert "telemetry seq 0..3" in caplog.text and "a seal was dropped" in caplog.text
    checker.handle(first)  # and replays it later
    assert "replayed" in caplog.text
    state = checker.agents["bat-1"]
    assert (state.failed_windows, state.verified_windows, state.refused_seals) == (1, 1, 1)


def test_two_different_messages_with_one_seq_fail_their_window(
    pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, creds = pki
    checker = SealChecker(trust, T)
    sealer = TelemetrySealer(creds["bat-1"])
    sealer.start_session(BDSEQ)
    checker.handle(birth())
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    checker.handle(telemetry(2, 42.0))  # forged first, then the real one
    sealed(sealer, checker, [telemetry(2), telemetry(3)])
    checker.handle(telemetry(3))  # an honest duplicate (redelivery) is no conflict
    checker.handle(seal_message(sealer))
    assert "two different messages with seq 2" in caplog.text
    assert checker.agents["bat-1"].failed_windows == 1


def test_joining_midway_is_unverifiable_then_the_chain_is_followed(
    pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, creds = pki
    checker = SealChecker(trust, T)
    sealer = TelemetrySealer(creds["bat-1"])
    sealer.start_session(BDSEQ)
    for s in range(2, 6):  # the EMS starts after seq 3
        sealer.add(TOPIC, s, telemetry(s).payload)
        if s > 3:
            checker.handle(telemetry(s))
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    checker.handle(seal_message(sealer))
    sealed(sealer, checker, [telemetry(6)])
    checker.handle(seal_message(sealer))
    state = checker.agents["bat-1"]
    assert (state.unverifiable_windows, state.verified_windows, state.failed_windows) == (1, 1, 0)
    assert caplog.text == ""


def test_telemetry_without_a_seal_is_reported_after_the_wait(
    pki: tuple[TrustStore, dict[str, Security]], caplog: pytest.LogCaptureFixture
) -> None:
    trust, _ = pki
    checker = SealChecker(trust, T, max_wait_s=5.0)
    checker.handle(birth())
    checker.handle(telemetry(2))
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    checker.sweep()  # not yet
    assert checker.agents["bat-1"].failed_windows == 0
    checker.sweep(now=1e12)
    assert checker.agents["bat-1"].failed_windows == 1
    assert "no seal within 5 s" in caplog.text


@pytest.mark.parametrize(
    ("signer", "topic_agent", "reason"),
    [
        ("bat-2", "bat-1", "is signed by agent 'bat-2'"),
        ("foreign", "bat-1", "does not verify with the CA"),
    ],
)
def test_seals_of_others_are_refused(
    pki: tuple[TrustStore, dict[str, Security]],
    caplog: pytest.LogCaptureFixture,
    signer: str,
    topic_agent: str,
    reason: str,
) -> None:
    trust, creds = pki
    checker = SealChecker(trust, T)
    checker.handle(birth())
    checker.handle(telemetry(2))
    forger = TelemetrySealer(creds[signer])
    forger.start_session(BDSEQ)
    forger.add(TOPIC, 2, telemetry(2).payload)
    caplog.set_level(logging.ERROR, "sef.ems.seals")
    consumed, _ = checker.handle(seal_message(forger, topic_agent))
    assert consumed and reason in caplog.text
    state = checker.agents["bat-1"]
    assert (state.refused_seals, state.verified_windows, len(state.pending)) == (1, 0, 1)


def test_a_tampered_seal_does_not_verify(pki: tuple[TrustStore, dict[str, Security]]) -> None:
    trust, creds = pki
    sealer = TelemetrySealer(creds["bat-1"])
    sealer.start_session(BDSEQ)
    sealer.add(TOPIC, 2, b"x")
    payload = json.loads(seal_message(sealer).payload)
    header, body, signature = payload["jws"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["count"] = 0
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    payload["jws"] = f"{header}.{forged}.{signature}"
    with pytest.raises(SecurityError, match="does not verify"):
        SealVerifier(trust).verify(json.dumps(payload).encode(), "bat-1")


def test_sign_seal_round_trip(pki: tuple[TrustStore, dict[str, Security]]) -> None:
    trust, creds = pki
    claims = SealClaims("bat-2", "bat-2", 5, 0, 9, 3, "a" * 64, 1.5)
    assert SealVerifier(trust).verify(sign_seal(creds["bat-2"], claims), "bat-2") == claims


def test_sealer_windows(pki: tuple[TrustStore, dict[str, Security]]) -> None:
    _, creds = pki
    sealer = TelemetrySealer(creds["bat-1"], window_s=10.0, window_messages=3)
    sealer.start_session(BDSEQ)
    assert sealer.seal() is None and not sealer.due()
    assert [sealer.add(TOPIC, s, b"p") for s in (2, 3, 4)] == [False, False, True]
    assert sealer.due(now=1e12) and not sealer.due()
    sealer.seal()
    assert sealer.from_seq == 5 and sealer.count == 0


SEAL_FIELDS = ["v", "jws", "iss", "agent", "bdseq", "from_seq", "to_seq", "count", "digest"]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(SEAL_FIELDS),
            st.one_of(st.none(), st.integers(), st.text(max_size=80), st.floats()),
        ).map(lambda d: json.dumps(d).encode()),
        st.text(alphabet="abcXYZ019-_.", max_size=200).map(
            lambda t: json.dumps({"v": 2, "jws": t}).encode()
        ),
    )
)
def test_garbage_seals_are_refused_with_a_reason(
    pki: tuple[TrustStore, dict[str, Security]], payload: bytes
) -> None:
    trust, _ = pki
    with pytest.raises(SecurityError) as refused:
        SealVerifier(trust).verify(payload, "bat-1")
    assert str(refused.value)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["iss", "agent", "bdseq", "from_seq", "to_seq", "count", "digest", "iat"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=70), st.floats()),
    )
)
def test_claims_parser_refuses_bad_claims_cleanly(claims: dict[str, object]) -> None:
    try:
        parsed = SealClaims.from_json(json.dumps(claims).encode())
    except SecurityError as exc:
        assert str(exc)
    else:
        assert parsed.from_seq <= parsed.to_seq and len(parsed.digest) == 64


def test_checker_ignores_retained_and_unreadable_messages(
    pki: tuple[TrustStore, dict[str, Security]],
) -> None:
    trust, _ = pki
    checker = SealChecker(trust, T)
    checker.handle(Message(TOPIC, telemetry(2).payload, 1, retain=True))
    checker.handle(Message(TOPIC, b"\xff not json", 1))
    checker.handle(Message(T.about("bat-1"), b"{}", 1))
    assert all(not a.pending for a in checker.agents.values())


def test_big_seal_is_refused(pki: tuple[TrustStore, dict[str, Security]], tmp_path: Path) -> None:
    trust, _ = pki
    with pytest.raises(SecurityError, match="over"):
        SealVerifier(trust).verify(b" " * 20_000, "bat-1")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**32 - 1)),
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)),
)
def test_fast_seq_read_agrees_with_the_json(seq: int | None, value: object) -> None:
    payload = PropertyUpdate(value, 1.0, seq).to_payload()
    assert _seq(payload) == seq
    assert _seq(b'{"v":1,"seq":12' + b"3" * 30 + b',"ts":1}') is None  # too long: JSON path


def test_checker_survives_hostile_payloads(pki: tuple[TrustStore, dict[str, Security]]) -> None:
    trust, _ = pki
    checker = SealChecker(trust, T)
    for payload in (b"[" * 200_000, b'{"v":1,"seq":' + b"[" * 200_000, b"\x00\xff", b""):
        checker.handle(Message(TOPIC, payload, 1))
        checker.handle(Message(T.status("bat-1"), payload, 1))
        checker.handle(Message(T.seal("bat-1"), payload, 1))
    assert checker.agents["bat-1"].refused_seals == 4


def test_a_replayed_birth_keeps_the_window_and_a_rebirth_starts_one(
    pki: tuple[TrustStore, dict[str, Security]],
) -> None:
    """A copy of the session's birth (same bdseq, seq 0, same ts: a replay, protocol.md
    §4.6) flushes nothing: the window still verifies. A rebirth (a new ts) restarts it."""
    trust, creds = pki
    checker = SealChecker(trust, T)
    sealer = TelemetrySealer(creds["bat-1"])
    sealer.start_session(BDSEQ)
    checker.handle(birth())
    sealed(sealer, checker, [telemetry(s) for s in range(2, 5)])
    checker.handle(birth())  # replayed: same ts
    sealed(sealer, checker, [telemetry(s) for s in range(5, 7)])
    assert checker.handle(seal_message(sealer))[0] is True
    state = checker.agents["bat-1"]
    assert (state.verified_windows, state.failed_windows) == (1, 0)
    sealed(sealer, checker, [telemetry(7)])
    rebirth = Message(T.status("bat-1"), Status(True, BDSEQ, 2.0, 10, 0).to_payload(), 1)
    checker.handle(rebirth)  # a new ts: the pending message's window is flushed
    assert state.failed_windows + state.unverifiable_windows == 1
    assert not state.pending
