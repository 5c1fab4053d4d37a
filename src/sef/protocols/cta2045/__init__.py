"""CTA-2045 codec and link layer, usable by both the UCM and the SGD side.

Layers (each tested on its own): transport (serial, pty, TCP) → framer (checksum,
:class:`Deframer`) → messages (Basic DR, Intermediate DR, data link) → :class:`Link`.
See ``docs/cta2045.md`` for byte layouts, timing and sources.
"""

from ._basic import (
    AppAck,
    AppNak,
    BasicMessage,
    CriticalPeak,
    CustomerOverride,
    EndShed,
    GridEmergency,
    GridGuidance,
    LoadUp,
    NextRelativePrice,
    OperationalStateQuery,
    OperationalStateResponse,
    OutsideCommStatus,
    PendingEventTime,
    PendingEventType,
    PowerLevel,
    PresentRelativePrice,
    Shed,
    SimpleTimeSync,
    Sleep,
    TimeRemaining,
    Wake,
    decode_basic,
)
from ._basic_codes import AppNakReason, BasicOpcode, CommStatus, GuidanceLevel, OperationalState
from ._checksum import checksum, verify_checksum
from ._codec import SUPPORTED_MESSAGE_TYPES, decode, decode_message
from ._commodity import CommodityCode, CommodityReadReply, CommodityReadRequest, CommodityRecord
from ._datalink import (
    BIT_RATES,
    MAX_PAYLOAD_CODES,
    BitRateRequest,
    DataLinkMessage,
    DataLinkOpcode,
    MaxPayloadQuery,
    MaxPayloadReply,
    PowerModeRequest,
    decode_datalink,
    max_payload_code,
)
from ._device_info import (
    Capability,
    DeviceType,
    FirmwareInfo,
    GetInformationReply,
    GetInformationRequest,
)
from ._encodings import (
    DURATION_MAX_S,
    DURATION_OVER_MAX,
    DURATION_UNSPECIFIED,
    decode_duration,
    decode_power_level,
    decode_relative_price,
    encode_duration,
    encode_power_level,
    encode_relative_price,
)
from ._errors import (
    CtaDecodeError,
    CtaError,
    LinkClosed,
    LinkError,
    LinkNak,
    LinkTimeout,
    NakReason,
    ResponseTimeout,
)
from ._frame import (
    BASIC_DR,
    DATA_LINK,
    INTERMEDIATE_DR,
    LINK_ACK,
    MAX_PAYLOAD_LEN,
    AckFrame,
    Deframer,
    DeframerEvent,
    Frame,
    FrameError,
    Message,
    MessageTypeQuery,
    NakFrame,
    encode_frame,
    parse_frame,
)
from ._intermediate import (
    IntermediateMessage,
    IntermediateReply,
    ResponseCode,
    decode_intermediate,
)
from ._link import Expectation, Link
from ._temperature import (
    GetPresentTemperatureRequest,
    GetSetpointRequest,
    PresentTemperatureReply,
    SetpointReply,
    SetSetpointRequest,
    TemperatureUnits,
)
from ._timing import (
    ACK_DELAY_S,
    ACK_TIMEOUT_S,
    INTER_MESSAGE_S,
    MAX_TRIES,
    PARTIAL_FRAME_TIMEOUT_S,
    RESPONSE_DELAY_S,
    RESPONSE_TIMEOUT_S,
    RETRY_DELAY_S,
    LinkStats,
    LinkTiming,
)
from ._transport import (
    SERIAL_BAUDRATE,
    FdTransport,
    PtyTransport,
    SerialTransport,
    StreamTransport,
    TcpListener,
    Transport,
    listen_tcp,
    open_pty,
    open_serial,
    open_tcp,
)
from ._utc_time import (
    CTA_EPOCH,
    GetUtcTimeRequest,
    SetUtcTimeRequest,
    UtcTimeReply,
    cta_seconds,
    from_cta_seconds,
)

__all__ = [
    "ACK_DELAY_S", "ACK_TIMEOUT_S", "BASIC_DR", "BIT_RATES", "CTA_EPOCH", "DATA_LINK",
    "DURATION_MAX_S", "DURATION_OVER_MAX", "DURATION_UNSPECIFIED", "INTERMEDIATE_DR",
    "INTER_MESSAGE_S", "LINK_ACK", "MAX_PAYLOAD_CODES", "MAX_PAYLOAD_LEN", "MAX_TRIES",
    "PARTIAL_FRAME_TIMEOUT_S", "RESPONSE_DELAY_S", "RESPONSE_TIMEOUT_S", "RETRY_DELAY_S",
    "SERIAL_BAUDRATE", "SUPPORTED_MESSAGE_TYPES",
    "AckFrame", "AppAck", "AppNak", "AppNakReason", "BasicMessage", "BasicOpcode",
    "BitRateRequest", "Capability", "CommStatus", "CommodityCode", "CommodityReadReply",
    "CommodityReadRequest", "CommodityRecord", "CriticalPeak", "CtaDecodeError", "CtaError",
    "CustomerOverride", "DataLinkMessage", "DataLinkOpcode", "Deframer", "DeframerEvent",
    "DeviceType", "EndShed", "Expectation", "FdTransport", "FirmwareInfo", "Frame",
    "FrameError", "GetInformationReply", "GetInformationRequest",
    "GetPresentTemperatureRequest", "GetSetpointRequest", "GetUtcTimeRequest",
    "GridEmergency", "GridGuidance", "GuidanceLevel", "IntermediateMessage",
    "IntermediateReply", "Link", "LinkClosed", "LinkError", "LinkNak", "LinkStats",
    "LinkTimeout", "LinkTiming", "LoadUp", "MaxPayloadQuery", "MaxPayloadReply", "Message",
    "MessageTypeQuery", "NakFrame", "NakReason", "NextRelativePrice", "OperationalState",
    "OperationalStateQuery", "OperationalStateResponse", "OutsideCommStatus",
    "PendingEventTime", "PendingEventType", "PowerLevel", "PowerModeRequest",
    "PresentRelativePrice", "PresentTemperatureReply", "PtyTransport", "ResponseCode",
    "ResponseTimeout", "SerialTransport", "SetSetpointRequest", "SetUtcTimeRequest",
    "SetpointReply", "Shed", "SimpleTimeSync", "Sleep", "StreamTransport", "TcpListener",
    "TemperatureUnits", "TimeRemaining", "Transport", "UtcTimeReply", "Wake", "checksum",
    "cta_seconds", "decode", "decode_basic", "decode_datalink", "decode_duration",
    "decode_intermediate", "decode_message", "decode_power_level", "decode_relative_price",
    "encode_duration", "encode_frame", "encode_power_level", "encode_relative_price",
    "from_cta_seconds", "listen_tcp", "max_payload_code", "open_pty", "open_serial",
    "open_tcp", "parse_frame", "verify_checksum",
]
