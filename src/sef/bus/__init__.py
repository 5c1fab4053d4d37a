"""The SEF bus binding: DER interfaces over MQTT (3.1.1 or 5).

The topic tree and payloads are specified in ``docs/protocol.md``. Public names:

* :class:`BusClient`, :class:`BrokerURL`, :class:`Message`, :class:`Will`: the connection;
  broker URL lists (failover) with :func:`parse_url_list`, :func:`url_list_resolver`.
* :class:`Topics`: builds and parses topics.
* :class:`Status`, :class:`About`, :class:`PropertyUpdate`, :class:`SignalEmission`,
  :class:`Call`, :class:`Reply`: payloads, with :func:`decode_object` /
  :func:`encode_object` and :class:`PayloadError`; signed (version-2) envelopes with
  :func:`decode_envelope` / :func:`encode_envelope`; a home gateway's
  :class:`GatewayAgents` and :func:`decode_bridge_state` / :func:`encode_bridge_state`.
* :class:`Session`: birth/death and message sequence numbers.
"""

from sef.bus._client import (
    SESSION_TAKEN_OVER,
    BrokerURL,
    BusClient,
    BusError,
    ConnectionLost,
    Message,
    Will,
)
from sef.bus._payload import (
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    SIGNED_PROTOCOL_VERSION,
    About,
    Call,
    ErrorName,
    GatewayAgents,
    InterfaceRef,
    PayloadError,
    PropertyUpdate,
    Reply,
    SignalEmission,
    Status,
    check_object,
    decode_bridge_state,
    decode_envelope,
    decode_object,
    encode_bridge_state,
    encode_envelope,
    encode_object,
    loads_kept,
)
from sef.bus._session import BDSEQ_AHEAD_S, BDSEQ_LIMIT, SEQ_MODULUS, Session, bdseq_problem
from sef.bus._suback import SubackRetry
from sef.bus._topics import InvalidName, ParsedTopic, TopicKind, Topics, check_id
from sef.bus._url_list import (
    UrlListResolver,
    is_url_list,
    parse_url_list,
    start_index,
    url_list_resolver,
)

__all__ = [
    "BDSEQ_AHEAD_S",
    "BDSEQ_LIMIT",
    "MAX_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "SEQ_MODULUS",
    "SESSION_TAKEN_OVER",
    "SIGNED_PROTOCOL_VERSION",
    "About",
    "BrokerURL",
    "BusClient",
    "BusError",
    "Call",
    "ConnectionLost",
    "ErrorName",
    "GatewayAgents",
    "InterfaceRef",
    "InvalidName",
    "Message",
    "ParsedTopic",
    "PayloadError",
    "PropertyUpdate",
    "Reply",
    "Session",
    "SignalEmission",
    "Status",
    "SubackRetry",
    "TopicKind",
    "Topics",
    "UrlListResolver",
    "Will",
    "bdseq_problem",
    "check_id",
    "check_object",
    "decode_bridge_state",
    "decode_envelope",
    "decode_object",
    "encode_bridge_state",
    "encode_envelope",
    "encode_object",
    "is_url_list",
    "loads_kept",
    "parse_url_list",
    "start_index",
    "url_list_resolver",
]
