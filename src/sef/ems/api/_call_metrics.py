"""Prometheus metrics of the EMS's calls and of its own bus identity: replies that did not
count, late replies, expired commands, status repairs and client-id takeovers."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sef.ems._service import EMS

__all__ = ["REJECT_REASONS", "CallCollector"]

REJECT_REASONS = ("malformed", "unknown_call", "not_addressed", "duplicate", "conflicting")
"""Why a reply did not count (see :class:`sef.ems._caller.RejectedReplies`)."""


class CallCollector(Collector):
    """Collects:

    * ``sef_replies_rejected_total{reason}`` — replies that did not count: malformed,
      unknown_call, not_addressed (from an agent the call was not sent to), duplicate,
      conflicting (a second, different reply in one agent's name);
    * ``sef_replies_late_total`` — replies taken after the caller's answer;
    * ``sef_commands_expired_total`` — calls whose expiry passed without any reply;
    * ``sef_host_status_repairs_total`` — republications of the EMS's own status;
    * ``sef_session_takeovers_total`` — signs that another client used the EMS's client id
      (MQTT 5 session taken over, repeated short connections, a foreign host status);
    * ``sef_session_takeover_active`` — 1 during a takeover episode.
    """

    def __init__(self, ems: EMS) -> None:
        self.ems = ems

    def collect(self) -> Iterator[Metric]:
        """The metrics, read from the EMS's counters now."""
        ems = self.ems
        rejected = CounterMetricFamily(
            "sef_replies_rejected",
            "Replies that did not count (forged, unaddressed, duplicate...), by reason.",
            labels=["reason"],
        )
        totals = ems.caller.rejected.total
        for reason in sorted(set(REJECT_REASONS) | set(totals)):
            rejected.add_metric([reason], totals.get(reason, 0))
        yield rejected
        yield CounterMetricFamily(
            "sef_replies_late",
            "Replies taken after the caller's answer (recorded in the command log).",
            value=ems.caller.late_replies,
        )
        yield CounterMetricFamily(
            "sef_commands_expired",
            "Commands whose expiry passed without any reply.",
            value=ems.commands_expired,
        )
        yield CounterMetricFamily(
            "sef_host_status_repairs",
            "Republications of the EMS's own host status over a stale or forged one.",
            value=ems.host_status_repairs,
        )
        yield CounterMetricFamily(
            "sef_session_takeovers",
            "Signs that another client used this EMS's MQTT client id.",
            value=ems.takeovers,
        )
        yield GaugeMetricFamily(
            "sef_session_takeover_active",
            "1 while another client is taking this EMS's client id over.",
            value=1.0 if ems.takeover_active else 0.0,
        )
