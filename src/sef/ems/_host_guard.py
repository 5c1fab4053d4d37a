"""The EMS's own presence: keep its retained host status true, and notice when another
client uses its client id (a *takeover*).

* **Status repair** (docs/protocol.md §4.4): the EMS subscribes to its own status topic and
  republishes its online status (same bdseq, next seq) when the topic holds anything else —
  a late will of an older session, a forged offline, an unreadable payload — at most once
  per :data:`STATUS_REPAIR_INTERVAL_S`.
* **Takeover**: on an unauthenticated broker any client may connect with the EMS's client
  id, which disconnects the EMS and, with a clean session, wipes its queued messages. Signs:
  MQTT 5 DISCONNECT reason 0x8E, :data:`SHORT_CONNECTIONS_FOR_TAKEOVER` connections in a row
  lost within :data:`SHORT_CONNECTION_S`, a persistent session gone at a first-attempt
  reconnect, an online status with a newer bdseq under our id. One ERROR per episode; the
  bus keeps backing off while it lasts. Only authentication prevents it.
"""

from __future__ import annotations

import asyncio
import logging

from sef.bus import (
    BusClient,
    ConnectionLost,
    Message,
    PayloadError,
    Session,
    Status,
    Topics,
    decode_object,
)
from sef.clock import Clock

__all__ = ["HostGuard"]

log = logging.getLogger("sef.ems")

SHORT_CONNECTION_S = 3.0
"""A connection lost sooner than this after it was made (real s) counts as a short one."""
SHORT_CONNECTIONS_FOR_TAKEOVER = 3
"""Consecutive short connections that mean another client uses our id (MQTT 3.1.1)."""
TAKEOVER_QUIET_S = 30.0
"""A takeover episode is over after this long (real s) connected without a new sign."""
STATUS_REPAIR_INTERVAL_S = 1.0
"""Least time between two republications of the host's own status, real s."""


class HostGuard:
    """Status repair and takeover detection for one EMS host (see the module docstring).

    Args:
        host_id: the EMS's id.
        bus: its bus client.
        session: its session numbers (bdseq, seq).
        topics: the topic tree.
        clock: for status time stamps.
        announce: whether this EMS announces a host status at all.
    """

    def __init__(
        self,
        host_id: str,
        bus: BusClient,
        session: Session,
        topics: Topics,
        clock: Clock,
        *,
        announce: bool = True,
    ) -> None:
        self.host_id = host_id
        self.bus = bus
        self.session = session
        self.topics = topics
        self.clock = clock
        self.announce = announce
        self.repairs = 0
        """Republications of our own status over another one."""
        self.takeovers = 0
        """Signs that another client used our client id (see :meth:`takeover`)."""
        self.takeover_active = False
        self.stopping = False
        self._takeover_last = 0.0
        self._takeover_episode = 0
        self._short_connections = 0
        self._repair_handle: asyncio.TimerHandle | None = None
        self._last_repair = -1e9

    def connected(self, *, persistent: bool) -> None:
        """After each (re)connection: look for a wiped session, publish our online status."""
        if (
            persistent
            and self.bus.connections > 1
            and self.bus.session_present is False
            and self.bus.failed_attempts == 0
        ):
            # the broker stayed up (the first attempt got through) yet forgot our
            # persistent session: a client with our id and a clean session wiped it
            self.takeover(
                "the broker no longer had its persistent session at reconnection, though "
                "it stayed up (another client connected with its id and a clean session)"
            )
        if self.announce:
            self.bus.publish(
                self.topics.host_status(self.host_id), self._online().to_payload(), retain=True
            )

    def stop(self) -> None:
        """Our own shutdown status follows: repair nothing from now on."""
        self.stopping = True
        if self._repair_handle is not None:
            self._repair_handle.cancel()

    def _online(self) -> Status:
        return Status(
            True, self.session.bdseq, self.clock.now(), self.bus.keepalive_s,
            self.session.next_seq(),
        )  # fmt: skip

    def status_message(self, message: Message) -> None:
        """Repair our retained host status when it is not our current birth.

        As agents repair a stale death (docs/protocol.md §4.3), the host republishes its
        online status (same bdseq, next seq) when its status topic holds anything else: an
        offline status (a late will of an older session, or a forged one), an older
        bdseq, an empty or unreadable payload. An *online* status with a newer bdseq than
        ours is a sign that another client announces itself under our id
        (:meth:`takeover`): a second EMS with the same id, or an impostor.
        """
        if not self.bus.connected or not self.announce or self.stopping:
            return
        mine = self.session.bdseq
        try:
            status: Status | None = Status.from_object(decode_object(message.payload))
        except PayloadError:
            status = None
        if status is not None and status.online and status.bdseq == mine:
            return  # our own birth
        if status is not None and status.online and status.bdseq > mine:
            self.takeover(f"another client announced host {self.host_id!r} (bdseq {status.bdseq})")
        what = (
            "an unreadable or empty status"
            if status is None
            else f"{'online' if status.online else 'offline'} status with bdseq {status.bdseq}"
        )
        log.warning(
            "EMS %s: %s%s on its status topic; republishing its online status (bdseq %d)",
            self.host_id,
            what,
            " (retained)" if message.retain else "",
            mine,
        )
        self._schedule_repair()

    def _schedule_repair(self) -> None:
        """Republish our online status now, or once :data:`STATUS_REPAIR_INTERVAL_S` after
        the last repair (one pending repair at most, so a flood costs one publish a second)."""
        if self._repair_handle is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_repair + STATUS_REPAIR_INTERVAL_S - loop.time()
        self._repair_handle = loop.call_later(max(0.0, wait), self._repair_status)

    def _repair_status(self) -> None:
        """Republish our online status (the timer of :meth:`_schedule_repair`)."""
        self._repair_handle = None
        self._last_repair = asyncio.get_running_loop().time()
        if not self.bus.connected or not self.announce or self.stopping:
            return
        self.repairs += 1
        status = self._online()
        try:
            self.bus.publish(
                self.topics.host_status(self.host_id), status.to_payload(), retain=True
            )
        except Exception as exc:  # lost the connection meanwhile: the next birth repairs it
            log.info("EMS %s: status repair not sent: %s", self.host_id, exc)

    def connection_lost(self, lost: ConnectionLost) -> bool:
        """Look for a takeover of our client id in how the connection ended; return
        whether the bus should keep backing off (while a takeover goes on)."""
        if lost.taken_over:
            self._short_connections = 0
            self.takeover("the broker disconnected it: session taken over (MQTT 5 reason 0x8E)")
        elif lost.lasted_s < SHORT_CONNECTION_S:
            self._short_connections += 1
            if self._short_connections >= SHORT_CONNECTIONS_FOR_TAKEOVER:
                self.takeover(
                    f"{self._short_connections} connections in a row lost within "
                    f"{SHORT_CONNECTION_S:.0f} s of connecting"
                )
        else:
            self._short_connections = 0
        return self.takeover_active

    def takeover(self, sign: str) -> None:
        """Count a sign that another client uses our client id; log it loudly once per
        episode (an episode ends after :data:`TAKEOVER_QUIET_S` without a sign)."""
        self.takeovers += 1
        self._takeover_last = asyncio.get_running_loop().time()
        self._takeover_episode += 1
        if self.takeover_active:
            return
        self.takeover_active = True
        log.error(
            "EMS %s: client id %r TAKEN OVER by another client: %s (%d sign(s) so far). "
            "Reconnecting with backoff and republishing the host status; the other client "
            "may be an attacker or a second EMS with the same id. Only a broker that "
            "authenticates clients and binds client ids to identities prevents this "
            "(docs/protocol.md §1).",
            self.host_id,
            self.bus.client_id,
            sign,
            self.takeovers,
        )

    def check_quiet(self, loop_now: float) -> None:
        """End a takeover episode after :data:`TAKEOVER_QUIET_S` connected without a sign."""
        if (
            self.takeover_active
            and self.bus.connected
            and loop_now - self._takeover_last >= TAKEOVER_QUIET_S
        ):
            log.warning(
                "EMS %s: takeover episode over: %d sign(s) of another client using id %r; "
                "connected for %.0f s without a new one",
                self.host_id,
                self._takeover_episode,
                self.bus.client_id,
                TAKEOVER_QUIET_S,
            )
            self.takeover_active = False
            self._takeover_episode = 0
            self._short_connections = 0
