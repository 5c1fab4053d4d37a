"""Prometheus metrics of one EMS, read from its counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from sef.ems._service import EMS
from sef.ems.api._call_metrics import CallCollector
from sef.ems.api._commands import CommandStats
from sef.ems.api._events import EventHub

__all__ = ["EMSCollector", "metrics_registry"]

COMMAND_STATUSES = ("ok", "error", "timeout", "partial", "sent", "rejected", "refused")


class EMSCollector(Collector):
    """Collects the EMS's registry, recorder, command and stream counters.

    Metric names (all counters end in ``_total``):

    * ``sef_agents{status}`` — agents by presence (online, offline, unknown);
    * ``sef_homes{uplink}``, ``sef_home_relay_queued``, ``sef_home_relay_dropped``,
      ``sef_homes_dropping`` — home gateways and their relays' queues (summed);
    * ``sef_broker_connected`` — 1 when the EMS is connected to the broker;
    * ``sef_ems_leader`` — 1 while this EMS worker runs the control side (holds the
      store's advisory lock; always 1 without an election), ``sef_ems_leader_terms_total``;
    * ``sef_messages_ingested_total``, ``sef_bad_messages_total``,
      ``sef_sequence_gaps_total``, ``sef_duplicates_total``, ``sef_backfilled_total``,
      ``sef_rebirths_requested_total`` (all reasons) and
      ``sef_rebirth_requests_total{reason}`` (gap, incomplete, gateway, refused, operator);
    * ``sef_agents_incomplete`` — agents whose birth the EMS holds only part of past the
      grace (:mod:`sef.ems._births`), ``sef_agents_birth_pending`` — those still within
      the grace or a subscription's drain; ``sef_rebirth_rate`` — the current (adaptive)
      rate of rebirth requests to them, agents/s;
    * ``sef_store_commit_seconds`` (summary: count = batches, sum = s spent committing),
      ``sef_store_last_commit_seconds``, ``sef_store_rows_total``,
      ``sef_store_duplicates_total``, ``sef_store_failures_total``,
      ``sef_store_dead_letters_total{category}``, ``sef_store_oldest_pending_seconds``
      (age of the oldest message not yet acknowledged), ``sef_store_ok`` (with a store
      only);
    * ``sef_calls_sent_total`` — calls published on the bus by this EMS;
    * ``sef_commands_total{status}`` and ``sef_command_replies_total{result}`` —
      commands of the API and their replies;
    * ``sef_event_stream_subscribers``, ``sef_event_stream_dropped_total``.
    """

    def __init__(self, ems: EMS, stats: CommandStats, hub: EventHub) -> None:
        self.ems = ems
        self.stats = stats
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        ems = self.ems
        agents = list(ems.registry.agents.values())
        by_status = GaugeMetricFamily(
            "sef_agents", "Agents known to the EMS, by presence.", labels=["status"]
        )
        for status, flag in (("online", True), ("offline", False), ("unknown", None)):
            by_status.add_metric([status], sum(1 for a in agents if a.online is flag))
        yield by_status
        yield from _home_metrics(ems)
        yield GaugeMetricFamily(
            "sef_broker_connected",
            "1 when connected to the broker.",
            value=1.0 if ems.bus.connected else 0.0,
        )
        yield GaugeMetricFamily(
            "sef_ems_leader",
            "1 while this EMS worker is the leader (runs the control side).",
            value=1.0 if ems.leadership.is_leader else 0.0,
        )
        yield CounterMetricFamily(
            "sef_ems_leader_terms", "Times this worker became leader.", value=ems.leadership.terms
        )
        yield CounterMetricFamily(
            "sef_messages_ingested", "Agent messages received.", value=ems.registry.messages
        )
        yield CounterMetricFamily(
            "sef_bad_messages",
            "Agent messages refused as malformed.",
            value=ems.registry.bad_messages,
        )
        yield CounterMetricFamily(
            "sef_sequence_gaps",
            "Message sequence gaps (lost messages).",
            value=sum(a.gaps for a in agents),
        )
        yield CounterMetricFamily(
            "sef_duplicates",
            "Duplicate or replayed agent messages dropped (docs/protocol.md §4.6).",
            value=ems.registry.duplicates,
        )
        yield CounterMetricFamily(
            "sef_backfilled",
            "Buffered agent updates received after a reconnection (docs/protocol.md §4.7).",
            value=ems.registry.backfilled,
        )
        yield CounterMetricFamily(
            "sef_rebirths_requested",
            "Rebirth requests sent to agents.",
            value=ems.rebirths_requested,
        )
        by_reason = CounterMetricFamily(
            "sef_rebirth_requests", "Rebirth requests sent to agents, by reason.", labels=["reason"]
        )
        for reason, count in sorted(ems.rebirths_by_reason.items()):
            by_reason.add_metric([reason], count)
        yield by_reason
        yield GaugeMetricFamily(
            "sef_agents_incomplete",
            "Agents whose birth the EMS holds only part of (past the grace).",
            value=ems.births.incomplete,
        )
        yield GaugeMetricFamily(
            "sef_rebirth_rate",
            "Current rate of rebirth requests to incomplete agents (adaptive), agents/s.",
            value=ems.births.rate_now,
        )
        yield GaugeMetricFamily(
            "sef_agents_birth_pending",
            "Agents lacking part of their birth, still within the grace or a drain.",
            value=ems.births.pending,
        )
        yield CounterMetricFamily(
            "sef_calls_sent", "Calls published on the bus.", value=ems.caller.calls_sent
        )
        recorder = ems.recorder
        if recorder is not None:
            yield SummaryMetricFamily(
                "sef_store_commit_seconds",
                "Time to commit one batch to the store, s.",
                count_value=recorder.batches,
                sum_value=recorder.commit_seconds_total,
            )
            yield GaugeMetricFamily(
                "sef_store_last_commit_seconds",
                "Time the last batch commit took, s.",
                value=recorder.last_commit_s,
            )
            yield CounterMetricFamily(
                "sef_store_rows",
                "Telemetry rows written to the store.",
                value=recorder.rows_written,
            )
            yield CounterMetricFamily(
                "sef_store_duplicates",
                "Redelivered telemetry rows skipped by the store.",
                value=recorder.duplicates,
            )
            yield CounterMetricFamily(
                "sef_store_failures", "Failed store commits (retried).", value=recorder.failures
            )
            dead = CounterMetricFamily(
                "sef_store_dead_letters",
                "Rows the store refused and kept as dead letters, by category.",
                labels=["category"],
            )
            for category, count in sorted(recorder.dead_letters.items()):
                dead.add_metric([category], count)
            yield dead
            health = recorder.health()
            yield GaugeMetricFamily(
                "sef_store_oldest_pending_seconds",
                "Age of the oldest message not yet acknowledged (rows not committed), s.",
                value=health.oldest_pending_s,
            )
            yield GaugeMetricFamily(
                "sef_store_ok",
                "1 when the store is advancing (writes succeed, nothing waits too long).",
                value=1.0 if health.ok else 0.0,
            )
        commands = CounterMetricFamily(
            "sef_commands", "Commands through the API, by outcome.", labels=["status"]
        )
        for status in sorted(set(COMMAND_STATUSES) | set(self.stats.by_status)):
            commands.add_metric([status], self.stats.by_status.get(status, 0))
        yield commands
        replies = CounterMetricFamily(
            "sef_command_replies", "Agent replies to API commands.", labels=["result"]
        )
        for result in ("ok", "error"):
            replies.add_metric([result], self.stats.replies.get(result, 0))
        yield replies
        yield GaugeMetricFamily(
            "sef_event_stream_subscribers", "Open /events streams.", value=self.hub.subscribers
        )
        yield CounterMetricFamily(
            "sef_event_stream_dropped",
            "Events dropped for slow /events subscribers.",
            value=self.hub.dropped,
        )


def metrics_registry(ems: EMS, stats: CommandStats, hub: EventHub) -> CollectorRegistry:
    """A registry of this EMS's metrics only (one per app, so several EMS can coexist)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(EMSCollector(ems, stats, hub))
    registry.register(CallCollector(ems))
    return registry


def _home_metrics(ems: EMS) -> Iterator[Metric]:
    """Homes by uplink state, and their relays' queues summed over the homes (one series
    each, however many homes: the per-home figures are in ``GET /homes``)."""
    homes = list(ems.homes.homes.values())
    by_uplink = GaugeMetricFamily(
        "sef_homes", "Home gateways known to the EMS, by uplink state.", labels=["uplink"]
    )
    for uplink in ("up", "down", "unknown"):
        by_uplink.add_metric([uplink], sum(1 for h in homes if h.uplink == uplink))
    yield by_uplink

    def total(name: str) -> float:
        return float(sum(int(h.stats.get(name) or 0) for h in homes if h.stats is not None))

    yield GaugeMetricFamily(
        "sef_home_relay_queued",
        "Messages the home gateways' relays hold for their uplinks (sum of their last stats).",
        value=total("queued"),
    )
    yield GaugeMetricFamily(
        "sef_home_relay_dropped",
        "Messages the home gateways' relays dropped at their queue limit since they started "
        "(sum of their last stats; alert on any increase).",
        value=total("dropped"),
    )
    yield GaugeMetricFamily(
        "sef_homes_dropping",
        "Home gateways whose relay has dropped messages at its queue limit.",
        value=float(sum(1 for h in homes if h.stats is not None and (h.stats.get("dropped") or 0))),
    )
