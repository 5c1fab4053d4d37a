"""Link timing constants (seconds, from the reference notes section 5.2) and counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from ._errors import NakReason
from ._frame import PARTIAL_FRAME_TIMEOUT_S

__all__ = [
    "ACK_DELAY_S",
    "ACK_TIMEOUT_S",
    "INTER_MESSAGE_S",
    "MAX_TRIES",
    "PARTIAL_FRAME_TIMEOUT_S",
    "RECEIVE_QUEUE_SIZE",
    "RESPONSE_DELAY_S",
    "RESPONSE_TIMEOUT_S",
    "RETRYABLE_NAKS",
    "RETRY_DELAY_S",
    "LinkStats",
    "LinkTiming",
]

#: tMA: delay between receiving a frame and sending its link ACK/NAK (spec 40–200 ms).
ACK_DELAY_S = 0.04
#: Sender-side wait for the link ACK/NAK.
ACK_TIMEOUT_S = 0.2
#: tAR: minimum delay between our link ACK and a following message of ours.
RESPONSE_DELAY_S = 0.1
#: Application-response timeout.
RESPONSE_TIMEOUT_S = 3.0
#: tIM: minimum spacing between two messages we send.
INTER_MESSAGE_S = 0.1
#: Delay after a missing ACK (or a retryable NAK) before the next try [1 src: Intwine].
RETRY_DELAY_S = 0.5
#: Tries in total for one message [1 src: Intwine].
MAX_TRIES = 3
#: Received application messages kept for :meth:`Link.receive` before the oldest is dropped.
RECEIVE_QUEUE_SIZE = 256
#: Link NAK reasons that mean "the bytes were damaged": the message is sent again.
RETRYABLE_NAKS = frozenset(
    {NakReason.INVALID_BYTE, NakReason.CHECKSUM_ERROR, NakReason.MESSAGE_TIMEOUT}
)


@dataclass(frozen=True)
class LinkTiming:
    """Every link timing constant, in seconds (``max_tries`` is a count)."""

    ack_delay_s: float = ACK_DELAY_S
    ack_timeout_s: float = ACK_TIMEOUT_S
    response_delay_s: float = RESPONSE_DELAY_S
    response_timeout_s: float = RESPONSE_TIMEOUT_S
    inter_message_s: float = INTER_MESSAGE_S
    partial_frame_timeout_s: float = PARTIAL_FRAME_TIMEOUT_S
    retry_delay_s: float = RETRY_DELAY_S
    max_tries: int = MAX_TRIES

    def scaled(self, factor: float) -> LinkTiming:
        """All durations multiplied by ``factor`` (for fast tests)."""
        return replace(
            self,
            **{
                name: getattr(self, name) * factor
                for name in self.__dataclass_fields__
                if name.endswith("_s")
            },
        )


@dataclass
class LinkStats:
    """Counters for diagnostics and tests."""

    frames_received: int = 0
    messages_sent: int = 0
    acks_sent: int = 0
    naks_sent: Counter[int] = field(default_factory=Counter)
    naks_received: Counter[int] = field(default_factory=Counter)
    retries: int = 0
    #: well-formed requests with unknown opcodes (answered 04 01 / rc 01, or NAK 07)
    unsupported_received: int = 0
