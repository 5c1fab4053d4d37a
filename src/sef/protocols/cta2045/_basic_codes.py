"""Code tables of Basic DR messages: opcode1 values and the enumerated opcode2 values."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["AppNakReason", "BasicOpcode", "CommStatus", "GuidanceLevel", "OperationalState"]


class BasicOpcode(IntEnum):
    """Basic DR opcode1 values [≥2 src]."""

    SHED = 0x01
    END_SHED = 0x02
    APP_ACK = 0x03
    APP_NAK = 0x04
    POWER_LEVEL = 0x06
    PRESENT_RELATIVE_PRICE = 0x07
    NEXT_RELATIVE_PRICE = 0x08
    TIME_REMAINING = 0x09
    CRITICAL_PEAK = 0x0A
    GRID_EMERGENCY = 0x0B
    GRID_GUIDANCE = 0x0C
    OUTSIDE_COMM_STATUS = 0x0E
    CUSTOMER_OVERRIDE = 0x11
    OPERATIONAL_STATE_QUERY = 0x12
    OPERATIONAL_STATE_RESPONSE = 0x13
    SLEEP = 0x14
    WAKE = 0x15
    SIMPLE_TIME_SYNC = 0x16
    LOAD_UP = 0x17
    PENDING_EVENT_TIME = 0x18
    PENDING_EVENT_TYPE = 0x19


class OperationalState(IntEnum):
    """Operational State Response opcode2 (0–12 [≥2 src]; 13–14 CTA-2045-B [1 src])."""

    IDLE_NORMAL = 0
    RUNNING_NORMAL = 1
    RUNNING_CURTAILED = 2
    RUNNING_HEIGHTENED = 3
    IDLE_CURTAILED = 4
    SGD_ERROR_CONDITION = 5
    IDLE_HEIGHTENED = 6
    CYCLING_ON = 7
    CYCLING_OFF = 8
    VARIABLE_FOLLOWING = 9
    VARIABLE_NOT_FOLLOWING = 10
    IDLE_OPTED_OUT = 11
    RUNNING_OPTED_OUT = 12
    RUNNING_PRICE_STREAM = 13
    IDLE_PRICE_STREAM = 14


class AppNakReason(IntEnum):
    """Application NAK (opcode 04) reasons [≥2 src]."""

    NO_REASON = 0
    OPCODE1_NOT_SUPPORTED = 1
    OPCODE2_INVALID = 2
    BUSY = 3
    LENGTH_INVALID = 4
    CUSTOMER_OVERRIDE = 5


class GuidanceLevel(IntEnum):
    """Grid Guidance opcode2."""

    BAD = 0
    NEUTRAL = 1
    GOOD = 2


class CommStatus(IntEnum):
    """Outside Communication Connection Status opcode2."""

    NO_CONNECTION = 0
    CONNECTED = 1
    POOR = 2
