"""What an agent should be running at a given time, from the last sequence sent to it."""

from __future__ import annotations

from sef.ems._intents import Intent, IntentBook
from sef.interface import Command, EnergyEvent

CHARGE = Command.CHARGE
DISCHARGE = Command.DISCHARGE
T0 = 1_767_225_600.0


def test_running_event_is_shortened_and_later_ones_follow() -> None:
    intent = Intent((EnergyEvent(CHARGE, 4, 1800), EnergyEvent(DISCHARGE, 8, 900)), T0, "c1")
    assert intent.remaining(T0) == [EnergyEvent(CHARGE, 4, 1800), EnergyEvent(DISCHARGE, 8, 900)]
    assert intent.remaining(T0 + 600.2) == [
        EnergyEvent(CHARGE, 4, 1200),  # 1199.8 s left, rounded up
        EnergyEvent(DISCHARGE, 8, 900),
    ]
    assert intent.remaining(T0 + 2000) == [EnergyEvent(DISCHARGE, 8, 700)]
    assert intent.remaining(T0 + 2700) == []
    assert intent.remaining(T0 + 2699.9) == [EnergyEvent(DISCHARGE, 8, 1)]


def test_open_ended_event_is_due_forever() -> None:
    intent = Intent((EnergyEvent(CHARGE, 2, 60), EnergyEvent(DISCHARGE, 4, 0)), T0, "c2")
    assert intent.remaining(T0 + 30) == [EnergyEvent(CHARGE, 2, 30), EnergyEvent(DISCHARGE, 4, 0)]
    assert intent.remaining(T0 + 10**6) == [EnergyEvent(DISCHARGE, 4, 0)]


def test_book_shares_one_intent_per_call_and_skips_idle() -> None:
    book = IntentBook()
    book.record(["a", "b"], [EnergyEvent(DISCHARGE, 4, 0)], T0, "g1")
    assert book.get("a") is book.get("b")
    book.record(["b"], [EnergyEvent(Command.IDLE, 0, 0)], T0 + 5, "c3")
    assert book.due("a", T0 + 100) == [EnergyEvent(DISCHARGE, 4, 0)]
    assert book.due("b", T0 + 100) == []  # open-ended idle: nothing to resend
    assert book.due("nobody", T0) == []
    book.forget("a")
    assert book.get("a") is None and len(book) == 1
