"""``sef api-token`` and a secure ``sef ems --api`` end to end: tokens created in the store
by the command line authenticate at a real ``sef ems`` process (mutual TLS to a real
Mosquitto with the generated ACL); without a store the API refuses to start unless
``--insecure``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from secure_stack import make_pki, secure_broker
from sef.security import Role


def sef(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sef", *args],
        capture_output=True,
        text=True,
        timeout=60.0,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def test_api_token_create_list_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ems.db'}"
    made = sef("api-token", "create", "--db", db, "--role", "operator", "--json", "olive")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["name"] == "olive" and created["role"] == "operator"
    assert len(created["token"]) >= 43  # 32 random bytes, URL-safe base64
    assert created["token"] not in (tmp_path / "ems.db").read_bytes().decode("latin-1")

    again = sef("api-token", "create", "--db", db, "--role", "viewer", "olive")
    assert again.returncode == 2 and "exists" in again.stderr
    bad = sef("api-token", "create", "--db", db, "--role", "root", "eve")
    assert bad.returncode == 2 and "unknown role 'root'" in bad.stderr
    listed = json.loads(sef("api-token", "list", "--db", db, "--json").stdout)
    assert [(t["name"], t["role"], t["revoked"]) for t in listed] == [("olive", "operator", None)]
    assert "token" not in listed[0]

    assert sef("api-token", "revoke", "--db", db, "olive").returncode == 0
    twice = sef("api-token", "revoke", "--db", db, "olive")
    assert twice.returncode == 2 and "no active token named 'olive'" in twice.stderr
    (row,) = json.loads(sef("api-token", "list", "--db", db, "--json").stdout)
    assert row["revoked"] is not None


def test_sef_ems_api_needs_a_store_or_insecure(tmp_path: Path) -> None:
    ca = make_pki(tmp_path, [("ems-x", Role.EMS, (), None)])
    refused = sef(
        *("ems", "--broker", "mqtts://127.0.0.1:9", "--id", "ems-x", "--api", "127.0.0.1:0"),
        *("--cert", str(ca.cert_path("ems-x")), "--key", str(ca.key_path("ems-x"))),
        *("--ca", str(ca.ca_path)),
    )
    assert refused.returncode == 2
    assert "authenticates with tokens kept in the store" in refused.stderr.replace("\n", " ")


async def test_secure_sef_ems_serves_tokens_of_its_store(tmp_path: Path) -> None:
    """Over HTTPS (--api-cert/--api-key): the store's token and an operator certificate
    of the deployment CA authenticate; nothing else does."""
    ca = make_pki(tmp_path)
    ca.issue("ems-cli", Role.EMS, hosts=("127.0.0.1",))
    ca.issue("carol", Role.OPERATOR)
    db = f"sqlite:///{tmp_path / 'ems.db'}"
    operator = json.loads(
        sef("api-token", "create", "--db", db, "--role", "operator", "--json", "olive").stdout
    )["token"]
    async with secure_broker(ca, tmp_path) as broker:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "sef", "ems", "--broker", broker.url, "--id", "ems-cli"),
                *("--cert", str(ca.cert_path("ems-cli")), "--key", str(ca.key_path("ems-cli"))),
                *("--ca", str(ca.ca_path), "--db", db, "--api", "127.0.0.1:0"),
                *("--api-cert", str(ca.cert_path("ems-cli"))),
                *("--api-key", str(ca.key_path("ems-cli"))),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            assert process.stdout is not None
            line = ""
            while not line.startswith("API on "):
                line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20.0)
                assert line, "sef ems ended before serving the API"
            url = line.split()[-1]
            assert url.startswith("https://127.0.0.1:")
            trust = ssl.create_default_context(cafile=str(ca.ca_path))
            async with httpx.AsyncClient(base_url=url, timeout=10.0, verify=trust) as http:
                assert (await http.get("/health")).status_code == 200
                assert (await http.get("/agents")).status_code == 401
                me = await http.get("/me", headers={"Authorization": f"Bearer {operator}"})
                assert me.json() == {"name": "olive", "role": "operator", "via": "token"}
            trust.load_cert_chain(ca.cert_path("carol"), ca.key_path("carol"))
            async with httpx.AsyncClient(base_url=url, timeout=10.0, verify=trust) as carol:
                me = await carol.get("/me")
                assert me.json() == {"name": "carol", "role": "operator", "via": "certificate"}
        finally:
            process.send_signal(signal.SIGINT)
            _, err = await asyncio.to_thread(process.communicate, timeout=20.0)
        assert process.returncode == 0, err
        assert "AUTHENTICATION IS OFF" not in err
