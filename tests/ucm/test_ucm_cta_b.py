"""The UCM side of CTA-2045-B's Temperature Offset and Advanced Load Up (issue 13 §3).

Over a real pty against a stand-in SGD (``ucm_standin``) that answers exactly what each
test gives it: the UCM reads the temperature offset for telemetry when the SGD supports
it and stops asking when it does not; with ``use_advanced_load_up`` a timed charge with a
rate is followed by Set Advanced Load Up (rate × duration), and never when the SGD said
it does not support it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cta_helpers import frame
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_standin import ack_only_rig, telemetry

NOT_IMPLEMENTED = cta.ResponseCode.NOT_IMPLEMENTED


def b_sgd(offset_f: int = 10) -> dict[type[cta.Message], Any]:
    """A CTA-2045-B water heater: state, temperature offset, Advanced Load Up."""
    return {
        cta.OperationalStateQuery: lambda m: cta.OperationalStateResponse(0),
        cta.GetTemperatureOffsetRequest: lambda m: cta.TemperatureOffsetReply(
            0, offset_f, cta.TemperatureUnits.FAHRENHEIT
        ),
        cta.GetAdvancedLoadUpRequest: lambda m: cta.AdvancedLoadUpReply(
            0, 0, 0, cta.AdvancedLoadUpUnits.NOT_ACTIVE
        ),
        cta.SetAdvancedLoadUpRequest: lambda m: cta.IntermediateReply(0x0C, 0x80, 0),
        cta.LoadUp: lambda m: cta.AppAck(cta.LoadUp.OPCODE),
        cta.Shed: lambda m: cta.AppAck(cta.Shed.OPCODE),
        cta.EndShed: lambda m: cta.AppAck(cta.EndShed.OPCODE),
    }


def sent(sgd: Any, kinds: tuple[type[cta.Message], ...]) -> list[cta.Message]:
    return [m for _, m in sgd.received if isinstance(m, kinds)]


async def test_offset_telemetry_and_advanced_load_up_after_load_up(broker_url: str) -> None:
    async with ack_only_rig(broker_url, "wh-b", b_sgd(), use_advanced_load_up=True) as (
        sgd,
        ucm,
        connects,
    ):
        await wait_for(lambda: telemetry(ucm).get("Temp_Offset_C") is not None, 8.0)
        assert telemetry(ucm)["Temp_Offset_C"] == 5.56  # 10 °F of offset = 5.56 K
        assert ucm.device.advanced_load_up
        outcome = await ucm.energy_method([("charge", 4, 1800)])
        assert outcome.applied is True
        commands = sent(sgd, (cta.LoadUp, cta.SetAdvancedLoadUpRequest))
        # Load Up starts the event, then the amount: 4 kW × 0.5 h = 2000 Wh within 30 min
        assert commands == [cta.LoadUp(30), cta.SetAdvancedLoadUpRequest(30, 2000, 0)]
        assert commands[1].encode() == frame("08 02 00 07 0C 00 00 1E 07 D0 00")
        assert telemetry(ucm)["Load_Up_Wh"] == 2000.0
        assert telemetry(ucm)["CTA_Message"] == frame("08 01 00 02 17 1E").hex(" ")
        # no amount, or not a charge: the Basic message alone
        await ucm.energy_method([("charge", 0, 1800)])
        await ucm.energy_method([("shed", 3, 1800)])
        assert len(sent(sgd, (cta.SetAdvancedLoadUpRequest,))) == 1
        assert "Load_Up_Wh" not in telemetry(ucm)
        assert len(connects) == 1


async def test_advanced_load_up_is_opt_in(broker_url: str) -> None:
    async with ack_only_rig(broker_url, "wh-b-off", b_sgd()) as (sgd, ucm, _):
        await wait_for(lambda: ucm.status.healthy and ucm.device.advanced_load_up, 8.0)
        await ucm.energy_method([("charge", 4, 1800)])
        assert sent(sgd, (cta.LoadUp, cta.SetAdvancedLoadUpRequest)) == [cta.LoadUp(30)]


async def test_sgd_without_the_b_features_falls_back(broker_url: str) -> None:
    """Response code 1 to both Gets: no offset in telemetry, asked once per connection;
    a charge is a plain Load Up even with ``use_advanced_load_up``."""
    answers = b_sgd()
    answers[cta.GetTemperatureOffsetRequest] = lambda m: cta.IntermediateReply(
        0x03, 0x82, NOT_IMPLEMENTED
    )
    answers[cta.GetAdvancedLoadUpRequest] = lambda m: cta.IntermediateReply(
        0x0C, 0x80, NOT_IMPLEMENTED
    )
    async with ack_only_rig(broker_url, "wh-a", answers, use_advanced_load_up=True) as (
        sgd,
        ucm,
        _,
    ):
        await wait_for(lambda: ucm.status.healthy, 8.0)
        await ucm.energy_method([("charge", 4, 1800)])
        polls = len(sent(sgd, (cta.GetPresentTemperatureRequest,)))
        await wait_for(
            lambda: len(sent(sgd, (cta.GetPresentTemperatureRequest,))) >= polls + 2, 8.0
        )
        assert len(sent(sgd, (cta.GetTemperatureOffsetRequest,))) == 1
        assert sent(sgd, (cta.LoadUp, cta.SetAdvancedLoadUpRequest)) == [cta.LoadUp(30)]
        last = telemetry(ucm)
        assert "Temp_Offset_C" not in last and "Load_Up_Wh" not in last
        assert not ucm.device.advanced_load_up and ucm.device.offset_supported is False


async def test_refused_advanced_load_up_is_reported(broker_url: str) -> None:
    answers = b_sgd()
    answers[cta.SetAdvancedLoadUpRequest] = lambda m: cta.IntermediateReply(
        0x0C, 0x80, cta.ResponseCode.CUSTOMER_OVERRIDE
    )
    async with ack_only_rig(broker_url, "wh-b-ovr", answers, use_advanced_load_up=True) as (
        sgd,
        ucm,
        _,
    ):
        await wait_for(lambda: ucm.status.healthy and ucm.device.advanced_load_up, 8.0)
        await ucm.energy_method([("charge", 9, 7200)])
        alu = sent(sgd, (cta.SetAdvancedLoadUpRequest,))
        assert alu == [cta.SetAdvancedLoadUpRequest(120, 18000, 0)]  # 9 kW × 2 h
        await asyncio.sleep(0.1)
        last = telemetry(ucm)
        assert last["Refused"] == "SetAdvancedLoadUpRequest: response code 7 (CUSTOMER_OVERRIDE)"
        assert last["Override"] is True and "Load_Up_Wh" not in last
