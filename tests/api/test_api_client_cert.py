"""Client certificates as API credentials (TLS with the deployment CA): an operator
certificate sends commands (logged under its identity, CSRF header needed like the
cookie); an agent's certificate, a revoked one and one of another CA are refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from api_stack import Stack
from sef.ems.api import ApiAuth, ApiServer, serve_api
from sef.security import CertificateAuthority, Role

CHARGE = {"cmds": [["charge", 2, 300]]}


def client_context(ca: CertificateAuthority, identity: str | None) -> ssl.SSLContext:
    """Trusts ``ca``; presents ``identity``'s certificate (none for ``None``)."""
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    if identity is not None:
        context.load_cert_chain(ca.cert_path(identity), ca.key_path(identity))
    return context


async def serve(stack: Stack, ca: CertificateAuthority) -> ApiServer:
    _, key = ca.issue("ems-api", Role.EMS, hosts=("127.0.0.1",))
    return await serve_api(
        stack.ems,
        "127.0.0.1",
        0,
        auth=ApiAuth.of_store(stack.store),
        cert=ca.cert_path("ems-api"),
        key=key,
        client_certs=ca.trust_store(),
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_operator_certificate_authenticates(stack: Stack, tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    ca.issue("carol", Role.OPERATOR)
    server = await serve(stack, ca)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, verify=client_context(ca, "carol")
        ) as carol:
            me = (await carol.get("/me")).json()
            assert me == {"name": "carol", "role": "operator", "via": "certificate"}
            plain = await carol.post("/agents/bat-1/commands", json=CHARGE)
            assert plain.status_code == 403 and "CSRF" in plain.json()["error"]
            sent = await carol.post(
                "/agents/bat-1/commands", json=CHARGE, headers={"x-sef-csrf": "1"}
            )
            assert sent.status_code == 200, sent.text
            assert sent.json()["sent_by"] == "carol"
            refused = await carol.post("/agents/bat-1/reset", headers={"x-sef-csrf": "1"})
            assert refused.status_code == 403  # an operator, not an admin
            token = {"Authorization": f"Bearer {stack.tokens['viewer']}"}
            assert (await carol.get("/me", headers=token)).json()["name"] == "victor"
        async with httpx.AsyncClient(base_url=server.url, verify=client_context(ca, None)) as anon:
            assert (await anon.get("/agents")).status_code == 401
    finally:
        await server.stop()
    assert stack.agents["bat-1"].executed == [[("charge", 2, 300)]]
    log = (await stack.http.get("/commands")).json()
    assert [e["sent_by"] for e in log] == ["carol"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_other_certificates_are_refused(stack: Stack, tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    ca.issue("bat-7", Role.AGENT)
    ca.issue("dave", Role.OPERATOR)
    ca.revoke("dave")
    other = CertificateAuthority.init(tmp_path / "other")
    other.issue("mallory", Role.OPERATOR)
    server = await serve(stack, ca)
    try:
        for identity, reason in (
            ("bat-7", "client certificate refused"),
            ("dave", "client certificate refused"),
        ):
            async with httpx.AsyncClient(
                base_url=server.url, verify=client_context(ca, identity)
            ) as http:
                answer = await http.get("/agents")
                assert answer.status_code == 401, (identity, answer.text)
                assert answer.json()["error"].startswith(reason), answer.text
        mallory = client_context(ca, None)
        mallory.load_cert_chain(other.cert_path("mallory"), other.key_path("mallory"))
        with pytest.raises(httpx.HTTPError):  # the TLS layer refuses another CA's client
            async with httpx.AsyncClient(base_url=server.url, verify=mallory) as http:
                await http.get("/agents")
    finally:
        await server.stop()
    assert all(a.executed == [] for a in stack.agents.values())
