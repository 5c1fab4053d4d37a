"""Configuration of the OpenADR 3 VEN adapter (:class:`sef.openadr._oadr3.Oadr3Adapter`).

Kept apart from the adapter so :mod:`sef.openadr` can export it without importing the
``openadr3`` library (only the ``_oadr3*`` adapter modules import it, on use).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Oadr3Config"]


@dataclass(frozen=True)
class Oadr3Config:
    """How the EMS reaches an OpenADR 3 VTN.

    Attributes:
        vtn_url: the VTN's base URL (``https://vtn.example/openadr3/3.1.0``), no trailing ``/``
            needed.
        ven_name: this VEN's name; sent as ``clientName`` on reports.
        client_id: OAuth2 client-credentials id (with :attr:`client_secret`).
        client_secret: its secret.
        token: a static bearer token instead of client credentials (it cannot be renewed).
        token_url: the token endpoint; ``None``: ask ``GET /auth/server`` for ``tokenURL``,
            and use ``{vtn_url}/auth/token`` when the VTN has no such route.
        scopes: OAuth2 scopes asked for with the client credentials (space-joined; empty:
            none asked, the VTN grants its default).
        register_ven: find or create this VEN's object (``/vens``) by :attr:`ven_name`
            before the first poll.
        programs: program names to follow; empty: every program the VTN shows this VEN.
        poll_interval_s: time between polls of programs and events, s on the EMS clock.
        max_backoff_s: the longest wait between polls while the VTN fails, s on the EMS
            clock (the wait doubles from :attr:`poll_interval_s` on each failure).
        report_groups: the SEF groups a usage report covers (one report resource each);
            empty: the event's target groups, or the whole fleet (``"*"``) for an
            untargeted event.
        report_interval_s: time between usage reports of an active event, s on the EMS
            clock.
        page_size: ``limit`` asked per ``GET /events`` page (the adapter pages with ``skip``).
        verify_tls: check the VTN's certificate (``False`` only for a lab).
        ca_file: a PEM CA bundle to check the VTN's certificate against, instead of the
            system's.
        timeout_s: per-request timeout, real s.
        max_answer_bytes: the largest answer body read from the VTN, bytes (default
            4 MiB); a larger one is refused mid-read (the poll fails and is counted).
        max_events_per_poll: the most objects one paged list (``GET /events`` of one
            program, ``/programs``, ``/vens``) may hold in one poll; more, or a page that
            brings no new id (a VTN ignoring ``skip``), fails the poll (default 20 000).
    """

    vtn_url: str
    ven_name: str
    client_id: str | None = None
    client_secret: str | None = None
    token: str | None = None
    token_url: str | None = None
    scopes: tuple[str, ...] = ()
    register_ven: bool = True
    programs: tuple[str, ...] = ()
    poll_interval_s: float = 10.0
    max_backoff_s: float = 300.0
    report_groups: tuple[str, ...] = ()
    report_interval_s: float = 60.0
    page_size: int = 50
    verify_tls: bool = True
    ca_file: str | None = None
    timeout_s: float = 10.0
    max_answer_bytes: int = 4 * 1024 * 1024
    max_events_per_poll: int = 20_000

    def __post_init__(self) -> None:
        if self.token is None and (self.client_id is None or self.client_secret is None):
            raise ValueError("OpenADR 3 needs a static token or client_id and client_secret")
        if not self.poll_interval_s > 0 or not self.report_interval_s > 0:
            raise ValueError("poll_interval_s and report_interval_s must be > 0")
        if self.page_size < 1:
            raise ValueError("page_size must be >= 1")
        if self.max_answer_bytes < 1024:
            raise ValueError("max_answer_bytes must be >= 1024")
        if self.max_events_per_poll < 1:
            raise ValueError("max_events_per_poll must be >= 1")
