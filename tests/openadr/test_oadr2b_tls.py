"""The OpenADR 2.0b VEN adapter with mutual TLS and XML signatures, certificates from SEF's
own CA, against a real openleadr VTN on loopback (poll 1 s)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from oadr2b_vtn import Pki, RecordingSink, TestVtn, make_pki

from sef.clock import RealClock
from sef.openadr import Oadr2bAdapter, Oadr2bConfig, TelemetrySample
from support import wait_for

log = logging.getLogger(__name__)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A SEF CA with a VTN and a VEN leaf."""
    return make_pki(tmp_path / "ca")


@pytest.fixture
async def tls_vtn(pki: Pki) -> AsyncIterator[TestVtn]:
    """A VTN with mutual TLS and signed messages that registers only the VEN certificate."""
    server = await TestVtn(pki=pki, expected_ven_fingerprint=pki.ven_fingerprint).start()
    yield server
    await server.stop()


def tls_config(vtn: TestVtn, pki: Pki, **changes: object) -> Oadr2bConfig:
    """The VEN's configuration for ``vtn``, with the VEN leaf of ``pki``."""
    fields: dict[str, object] = {
        "vtn_url": vtn.url,
        "ven_name": "sef-ems",
        "cert": pki.ven_cert,
        "key": pki.ven_key,
        "ca_file": pki.ca,
        "vtn_fingerprint": pki.vtn_fingerprint,
        "report_groups": ("grp-batteries",),
        "report_interval_s": 1,
        "register_timeout_s": 8,
    }
    fields.update(changes)
    return Oadr2bConfig(**fields)  # type: ignore[arg-type]


async def test_mtls_signed_event_opt_and_report(tls_vtn: TestVtn, pki: Pki) -> None:
    sent: list[str] = []
    sink = RecordingSink(
        samples={
            "grp-batteries": TelemetrySample(
                "grp-batteries", time.time(), 3.5, 20.0, 230.0, 15.0, 2
            )
        }
    )
    adapter = Oadr2bAdapter(tls_config(tls_vtn, pki), clock=RealClock())
    await adapter.start(sink)
    try:
        adapter._client.add_hook("before_send_xml", sent.append)
        ven_id = adapter.status().ven_id or ""
        assert tls_vtn.vens[ven_id]["fingerprint"] == pki.ven_fingerprint
        start = (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=0)
        added = tls_vtn.add_simple(ven_id, "tls-1", 2, start, 600)
        await wait_for(lambda: bool(tls_vtn.opts_for("tls-1")), 5)
        latency = sink.event_seen_at[("tls-1", 0)] - added
        log.info("LATENCY oadr2b mTLS+signatures add_event -> sink.on_event %.3f s", latency)
        assert latency < 2.0
        assert sink.versions("tls-1")[0].signals[0].intervals[0].value == 2.0
        assert tls_vtn.opts_for("tls-1")[0].opt == "optIn"
        await wait_for(lambda: bool(tls_vtn.reports.get(("grp-batteries", "RealPower"))), 5)
        assert tls_vtn.reports[("grp-batteries", "RealPower")][-1][1] == 3.5
        assert any("SignatureValue" in xml for xml in sent)  # messages are signed
        assert adapter.status().errors == 0
    finally:
        await adapter.stop()


async def test_ven_cert_from_foreign_ca_never_registers(
    tls_vtn: TestVtn, pki: Pki, tmp_path: Path
) -> None:
    foreign = make_pki(tmp_path / "foreign")
    adapter = Oadr2bAdapter(
        tls_config(tls_vtn, pki, cert=foreign.ven_cert, key=foreign.ven_key),
        clock=RealClock(),
    )
    with pytest.raises(ConnectionError):
        await adapter.start(RecordingSink())
    assert not tls_vtn.vens
    assert not adapter.status().registered and adapter.status().errors >= 1


async def test_wrong_vtn_fingerprint_refuses_the_vtn(tls_vtn: TestVtn, pki: Pki) -> None:
    adapter = Oadr2bAdapter(
        tls_config(tls_vtn, pki, vtn_fingerprint="00:11:22:33:44:55:66:77:88:99"),
        clock=RealClock(),
    )
    with pytest.raises(ConnectionError, match="no valid answer"):
        await adapter.start(RecordingSink())
    assert not adapter.status().registered


async def test_vtn_refuses_unexpected_ven_certificate(pki: Pki, tmp_path: Path) -> None:
    """Same CA, but the VTN expects another VEN's fingerprint: registration refused."""
    other = make_pki(tmp_path / "other")
    vtn = await TestVtn(pki=pki, expected_ven_fingerprint=other.ven_fingerprint).start()
    try:
        adapter = Oadr2bAdapter(tls_config(vtn, pki), clock=RealClock())
        with pytest.raises(ConnectionError):
            await adapter.start(RecordingSink())
        assert not vtn.vens
    finally:
        await vtn.stop()


def test_client_certificate_needs_ca_file(pki: Pki) -> None:
    with pytest.raises(ValueError, match="ca_file"):
        Oadr2bConfig(vtn_url="https://x", ven_name="v", cert=pki.ven_cert, key=pki.ven_key)
