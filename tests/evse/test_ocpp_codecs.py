"""sef.protocols.ocpp: profiles, meter values, credentials and frames; checked against the
``ocpp`` package's own JSON schemas, and fuzzed (bad input is a ValueError, never a crash)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.messages import Call, _validate_payload

from sef.protocols.ocpp import (
    ChargingLimit,
    ProfileStore,
    basic_auth_header,
    clear_request,
    frame_problem,
    load_passwords,
    meter_value,
    parse_basic_auth,
    parse_meter_values,
    parse_profile,
    profile_payload,
)

T0 = 1_800_000_000.0


def _valid(version: str, action: str, payload: dict[str, Any]) -> None:
    """Raises if ``payload`` (snake_case) breaks the ocpp package's schema of ``action``."""
    ocpp_version = "1.6" if version == "ocpp1.6" else "2.0.1"
    _validate_payload(Call("1", action, snake_to_camel_case(payload)), ocpp_version)


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
@pytest.mark.parametrize("unit", ["W", "A"])
@pytest.mark.parametrize("purpose", ["TxProfile", "TxDefaultProfile"])
def test_profiles_are_schema_valid_and_round_trip(version: str, unit: str, purpose: str) -> None:
    tx = "42" if purpose == "TxProfile" else None
    profile = profile_payload(
        version, profile_id=7, purpose=purpose, limit_kw=7.0, unit=unit, start_s=T0,
        duration_s=1800.4, transaction_id=tx, stack_level=1,
    )  # fmt: skip
    if version == "ocpp1.6":
        _valid(version, "SetChargingProfile", {"connector_id": 1, "cs_charging_profiles": profile})
    else:
        _valid(version, "SetChargingProfile", {"evse_id": 1, "charging_profile": profile})
    # what the receiver's @on handler gets: camelCase on the wire, snake_case again
    received = camel_to_snake_case(snake_to_camel_case(profile))
    limit = parse_profile(version, received, now_s=T0 + 5)
    assert (limit.profile_id, limit.purpose, limit.unit, limit.transaction_id) == (
        7, purpose, unit, tx,
    )  # fmt: skip
    assert limit.start_s == pytest.approx(T0, abs=0.001)
    assert limit.duration_s == 1801
    assert limit.limit_kw(T0 - 1) is None
    assert limit.limit_kw(T0 + 100) == pytest.approx(7.0, rel=0.005)  # A: 10.1 A x 3 x 230 V
    assert limit.limit_kw(T0 + 1801) is None


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
def test_clear_and_meter_values_are_schema_valid(version: str) -> None:
    _valid(version, "ClearChargingProfile", clear_request(version, profile_id=7, purpose=None))
    _valid(
        version,
        "ClearChargingProfile",
        clear_request(version, profile_id=None, purpose="TxProfile"),
    )
    mv = meter_value(version, T0, 12345.6, 7000.0)
    payload: dict[str, Any] = {"meter_value": [mv]}
    payload |= {"connector_id": 1} if version == "ocpp1.6" else {"evse_id": 1}
    _valid(version, "MeterValues", payload)
    reading = parse_meter_values(camel_to_snake_case(snake_to_camel_case([mv])))
    assert reading is not None
    assert (reading.t_s, reading.energy_wh, reading.power_w) == (T0, 12345.6, 7000.0)


def test_meter_units_and_newest_value() -> None:
    values = [
        {"timestamp": "2027-01-01T00:01:00Z", "sampled_value": [{"value": "2.5", "unit": "kWh"}]},
        {"timestamp": "2027-01-01T00:00:00Z", "sampled_value": [{"value": "1.0", "unit": "kWh"}]},
        {
            "timestamp": "2027-01-01T00:01:00Z",
            "sampled_value": [
                {"value": 3, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "kW"}},
                {"value": "9", "measurand": "Power.Active.Import", "phase": "L1", "unit": "kW"},
                {"value": "50", "measurand": "Frequency"},
            ],
        },
    ]
    reading = parse_meter_values(values)
    assert reading is not None and reading.energy_wh == 2500.0 and reading.power_w == 3000.0
    for bad in ("x", [1], [{"timestamp": "t", "sampled_value": []}], [{"sampled_value": 1}]):
        with pytest.raises(ValueError):
            parse_meter_values(bad)
    with pytest.raises(ValueError, match="unusable"):
        parse_meter_values(
            [{"timestamp": "2027-01-01T00:00:00Z", "sampled_value": [{"value": "nan"}]}]
        )


def test_profile_store_rules() -> None:
    def lim(pid: int, purpose: str, level: int, kw: float, tx: str | None = None) -> ChargingLimit:
        return ChargingLimit(pid, purpose, level, "W", ((0.0, kw * 1000, None),), T0, 600.0, tx)

    store = ProfileStore()
    assert store.limit_kw(T0, "1") is None
    store.install(lim(1, "TxDefaultProfile", 0, 11.0))
    assert store.limit_kw(T0, None) == 11.0
    store.install(lim(2, "TxProfile", 0, 7.0, "1"))
    assert store.limit_kw(T0, "1") == 7.0
    assert store.limit_kw(T0, "2") == 11.0  # another transaction: the default
    store.install(lim(3, "TxProfile", 1, 5.0, "1"))  # higher stack level wins
    assert store.limit_kw(T0, "1") == 5.0
    store.install(lim(4, "TxProfile", 1, 4.0, "1"))  # same purpose and level replaces
    assert set(store.profiles) == {1, 2, 4}
    store.install(lim(9, "ChargePointMaxProfile", 0, 3.0))
    assert store.limit_kw(T0, "1") == 3.0
    assert store.limit_kw(T0 + 600, "1") is None  # all expired
    assert store.clear(purpose="TxProfile") == 2
    store.end_transaction()
    assert store.clear(profile_id=1) == 1


def test_basic_auth_round_trip() -> None:
    assert parse_basic_auth(basic_auth_header("CP-1", "pass:word")) == ("CP-1", "pass:word")
    for bad in (None, "", "Bearer x", "Basic", "Basic !!!", "Basic " + "QQ=="):
        assert parse_basic_auth(bad) is None


def test_password_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("# chargers\nCP-1:0123456789abcdef\n\nCP-2: with spaces 0123456\n")
    os.chmod(path, 0o600)
    assert load_passwords(path) == {"CP-1": "0123456789abcdef", "CP-2": " with spaces 0123456"}
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_passwords(path)
    for text, why in (("CP-1\n", "ID:PASSWORD"), ("CP-1:short\n", "16-40"),
                      ("A:0123456789abcdef\nA:0123456789abcdef\n", "twice")):  # fmt: skip
        path.write_text(text)
        os.chmod(path, 0o600)
        with pytest.raises(ValueError, match=why):
            load_passwords(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, version=st.sampled_from(["ocpp1.6", "ocpp2.0.1"]))
def test_parsers_raise_only_value_errors(value: Any, version: str) -> None:
    for parse in (
        lambda: parse_profile(version, value, T0),
        lambda: parse_meter_values(value),
        lambda: parse_meter_values([{"timestamp": "2027-01-01T00:00:00Z", "sampled_value": value}]),
        lambda: parse_profile(
            version, {"charging_schedule": value, "charging_profile_purpose": "TxProfile"}, T0
        ),
    ):
        with contextlib.suppress(ValueError):
            parse()


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(max_size=200), st.binary(max_size=50), json_values.map(json.dumps)))
def test_frame_problem_never_raises(raw: Any) -> None:
    problem = frame_problem(raw)
    assert problem is None or isinstance(problem, str)
