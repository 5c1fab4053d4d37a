"""Unit tests for sef.bus Session: bdseq strictly increases, seq counts from 0 and wraps."""

from __future__ import annotations

import itertools
import types

import pytest

from sef.bus import SEQ_MODULUS, Session
from sef.bus import _session as session_module


class FakeTime:
    """Replaces the ``time`` module seen by ``sef.bus._session``; ``ns`` is time.time_ns()."""

    def __init__(self, ms: int) -> None:
        self.ns = ms * 1_000_000 + 123_456  # part-way into the millisecond

    def advance_ms(self, ms: int) -> None:
        self.ns += ms * 1_000_000


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime(1_782_864_000_000)
    monkeypatch.setattr(session_module, "time", types.SimpleNamespace(time_ns=lambda: fake.ns))
    monkeypatch.setattr(session_module, "_last_bdseq", 0)  # as in a fresh process
    return fake


def test_bdseq_is_wall_clock_ms(fake_time: FakeTime) -> None:
    assert Session().new_session() == 1_782_864_000_000


def test_same_millisecond_twice_still_increases(fake_time: FakeTime) -> None:
    session = Session()
    first = session.new_session()
    second = session.new_session()
    third = session.new_session()
    assert (first, second, third) == (1_782_864_000_000, 1_782_864_000_001, 1_782_864_000_002)
    assert session.bdseq == third


def test_bdseq_follows_clock_again_once_it_catches_up(fake_time: FakeTime) -> None:
    session = Session()
    session.new_session()
    session.new_session()  # ms + 1
    fake_time.advance_ms(10)
    assert session.new_session() == 1_782_864_000_010


def test_bdseq_never_goes_back_when_wall_clock_steps_back(fake_time: FakeTime) -> None:
    session = Session()
    first = session.new_session()
    fake_time.advance_ms(-5000)  # NTP step backwards
    assert session.new_session() == first + 1


def test_restart_one_ms_later_gives_higher_bdseq(fake_time: FakeTime) -> None:
    old = Session()
    before = old.new_session()
    fake_time.advance_ms(1)
    restarted = Session()
    assert restarted.new_session() > before


def test_restart_within_same_millisecond_gives_higher_bdseq(fake_time: FakeTime) -> None:
    """Two Session objects one after another (a restart) must not reuse or go below a bdseq.

    The old session reconnected twice in this millisecond (bdseq ms, ms+1); the restarted
    one must still be newer, or the EMS ignores its birth as stale.
    """
    old = Session()
    old.new_session()
    last_old = old.new_session()
    restarted = Session()
    assert restarted.new_session() > last_old


def test_back_to_back_sessions_real_clock() -> None:
    session = Session()
    values = [session.new_session() for _ in range(2000)]  # many share a millisecond
    assert all(b > a for a, b in itertools.pairwise(values))


def test_seq_counts_from_zero_and_restarts_with_session() -> None:
    session = Session()
    session.new_session()
    assert [session.next_seq() for _ in range(4)] == [0, 1, 2, 3]
    session.new_session()
    assert session.next_seq() == 0
    assert session.next_seq() == 1


def test_seq_wraps_at_2_pow_32() -> None:
    assert SEQ_MODULUS == 2**32
    session = Session()
    session.new_session()
    session.seq = 2**32 - 2
    assert [session.next_seq() for _ in range(4)] == [2**32 - 2, 2**32 - 1, 0, 1]
