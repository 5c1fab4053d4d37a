"""Authentication and roles of the EMS API (issue 12's acceptance): no token → 401, a
viewer's command → 403, an operator's → 200 with the operator named in the command log;
admin-only actions; revocation; the EMS's own commands; authentication off."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from api_stack import Stack
from sef.ems.api import ApiAuth, serve_api
from sef.ems.store import Store, TokenStore
from sef.interface import DEMO_INTERFACE

CHARGE = {"cmds": [["charge", 4, 600]]}


async def test_no_token_is_401_everywhere_but_health(stack: Stack) -> None:
    """Every route, the dashboard's files and unknown paths too, needs a token (no route
    is revealed by a 404); only /health and the login page are public."""
    async with stack.client(None) as anonymous:
        for method, path in (
            ("GET", "/agents"),
            ("GET", "/agents/bat-1"),
            ("GET", "/commands"),
            ("GET", "/metrics"),
            ("GET", "/events"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("GET", "/web/app.js"),
            ("GET", "/no/such/path"),
            ("POST", "/agents/bat-1/commands"),
            ("POST", "/agents/bat-1/approve"),
        ):
            response = await anonymous.request(method, path, json=CHARGE)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == 'Bearer realm="sef"'
            assert response.json()["error"].startswith("authentication required")
            assert response.headers["cache-control"] == "no-store"
        assert (await anonymous.get("/health")).status_code == 200
        login = await anonymous.get("/login")
        assert login.status_code == 200 and "API token" in login.text
        assert (await anonymous.get("/web/login.js")).status_code == 200
        root = await anonymous.get("/")  # a browser without a session goes to the login
        assert root.status_code == 303 and root.headers["location"] == "login"
    assert all(a.executed == [] for a in stack.agents.values())


async def test_viewer_reads_but_may_not_send(stack: Stack) -> None:
    async with stack.client("viewer") as viewer:
        assert (await viewer.get("/agents")).status_code == 200
        assert (await viewer.get("/commands")).json() == []
        me = (await viewer.get("/me")).json()
        assert me == {"name": "victor", "role": "viewer", "via": "token"}
        response = await viewer.post("/agents/bat-1/commands", json=CHARGE)
        assert response.status_code == 403, response.text
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert response.json() == {
            "error": "victor (viewer) may not POST /agents/bat-1/commands: it needs the "
            "operator role",
            "detail": {"role": "viewer", "needed": "operator"},
        }
        group = await viewer.post("/groups/feeder-1/commands", json=CHARGE)
        assert group.status_code == 403
        metrics = (await viewer.get("/metrics")).text
    await asyncio.sleep(0.3)
    assert all(a.executed == [] for a in stack.agents.values())
    assert (await stack.http.get("/commands")).json() == []  # nothing was sent or logged
    assert 'sef_commands_total{status="rejected"} 2.0' in metrics


async def test_operator_sends_and_the_log_names_the_operator(stack: Stack) -> None:
    """The acceptance test: 200, the agent executes, the log row says who sent it (on
    SQLite and PostgreSQL: the tokens and the log live in the store)."""
    async with stack.client("operator") as operator:
        response = await operator.post("/agents/bat-1/commands", json=CHARGE)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["status"] == "ok" and result["sent_by"] == "olivia"
        log = (await operator.get("/commands")).json()
    assert stack.agents["bat-1"].executed == [[("charge", 4, 600)]]
    assert [(e["call_id"], e["sent_by"], e["sender"]) for e in log] == [
        (result["call_id"], "olivia", "ems-api")
    ]
    assert stack.store is not None
    rows = await asyncio.to_thread(stack.store.commands)
    assert rows[0]["sent_by"] == "olivia"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_registry_actions_need_an_admin(stack: Stack) -> None:
    async with stack.client("operator") as operator, stack.client("admin") as admin:
        for path in ("/agents/bat-1/reset", "/agents/bat-9/approve"):
            refused = await operator.post(path)
            assert refused.status_code == 403, refused.text
            assert refused.json()["detail"] == {"role": "operator", "needed": "admin"}
        assert (await admin.post("/agents/bat-9/approve")).status_code == 200
        assert "bat-9" in (await admin.get("/admission")).json()["approved"]
        assert (await operator.get("/admission")).status_code == 200  # a GET: viewer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_bad_and_revoked_tokens_are_401(stack: Stack) -> None:
    assert stack.store is not None
    tokens = TokenStore(stack.store)
    extra = await asyncio.to_thread(tokens.create, "temp", "operator")
    async with stack.client(None) as http:
        headers = {"Authorization": f"Bearer {extra}"}
        await wait_for_status(http, headers, 200)  # a new token works within a second
        wrong = await http.get("/agents", headers={"Authorization": "Bearer " + "x" * 43})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "unknown or revoked token"
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        await asyncio.to_thread(tokens.revoke, "temp")
        started = time.monotonic()
        await wait_for_status(http, headers, 401)
        assert time.monotonic() - started < 3.0
        still = await http.post("/agents/bat-1/commands", json=CHARGE, headers=headers)
        assert still.status_code == 401
    assert stack.agents["bat-1"].executed == []


async def wait_for_status(http: httpx.AsyncClient, headers: dict[str, str], status: int) -> None:
    """Poll ``GET /agents`` with ``headers`` until it answers ``status`` (3 s at most)."""
    deadline = time.monotonic() + 3.0
    while (got := (await http.get("/agents", headers=headers)).status_code) != status:
        assert time.monotonic() < deadline, f"still {got}, not {status}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_ems_own_commands_name_the_ems(stack: Stack) -> None:
    """A command the EMS sends by itself (control, reconciliation) is logged as sent by
    the EMS's own id; one sent for the API by its token's name."""
    await stack.ems.call("bat-2", DEMO_INTERFACE, "EnergyMethod", [[["idle", 0, 0]]])
    log = (await stack.http.get("/commands")).json()
    assert [(e["target"], e["sent_by"]) for e in log] == [("bat-2", "ems-api")]


async def test_authentication_off_names_the_client_address(stack_no_store: Stack) -> None:
    """``sef ems --insecure``: every request is an anonymous admin; commands are logged
    as ``anonymous@ADDRESS``; the start says so loudly (checked in test_api_guards)."""
    stack = stack_no_store
    server = await serve_api(stack.ems, "127.0.0.1", 0, auth=ApiAuth.open())
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            me = (await http.get("/me")).json()
            assert me == {"name": "anonymous@127.0.0.1", "role": "admin", "via": "insecure"}
            sent = await http.post("/agents/bat-1/commands", json=CHARGE)
            assert sent.status_code == 200 and sent.json()["sent_by"] == "anonymous@127.0.0.1"
            assert (await http.post("/agents/bat-9/approve")).status_code == 200  # admin
    finally:
        await server.stop()
    assert stack.agents["bat-1"].executed == [[("charge", 4, 600)]], stack.agents["bat-1"].executed


async def test_without_a_store_only_memory_tokens_work(stack_no_store: Stack) -> None:
    """An EMS without a store has no token table: the stack's tokens are in memory; a
    made-up one is refused."""
    async with stack_no_store.client("operator") as operator:
        response = await operator.post("/agents/bat-2/commands", json=CHARGE)
        assert response.status_code == 200 and response.json()["sent_by"] == "olivia"
    bogus = {"Authorization": "Bearer made-up-token-000000000000000000000000000"}
    assert (await stack_no_store.http.get("/agents", headers=bogus)).status_code == 401


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_first_requests_wait_for_the_token_list(stack: Stack) -> None:
    """Many requests at once on a fresh server (token list not read yet) are all served:
    they wait for the one read in progress instead of being refused (a race found by the
    limits tests: 4 of 64 got 503)."""
    server = await serve_api(stack.ems, "127.0.0.1", 0, auth=ApiAuth.of_store(stack.store))
    try:
        headers = {"Authorization": f"Bearer {stack.tokens['viewer']}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            answers = await asyncio.gather(*(http.get("/groups") for _ in range(64)))
        assert [a.status_code for a in answers] == [200] * 64
    finally:
        await server.stop()


async def test_an_unreadable_token_table_is_503_after_a_while(
    stack_no_store: Stack, tmp_path: Path
) -> None:
    """While the token table cannot be read the last list read stays in use for
    ``max_stale_s``; then requests are refused with 503 (not let in, not a crash)."""
    path = tmp_path / "tokens.db"
    store = Store.open(f"sqlite:///{path}")
    token = TokenStore(store).create("tess", "viewer")
    auth = ApiAuth(TokenStore(store), refresh_s=0.05, max_stale_s=0.6)
    server = await serve_api(stack_no_store.ems, "127.0.0.1", 0, auth=auth)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            assert (await http.get("/groups")).status_code == 200
            store.engine.dispose()
            for name in ("tokens.db", "tokens.db-wal", "tokens.db-shm"):
                (tmp_path / name).unlink(missing_ok=True)  # reopened empty: no table
            await asyncio.sleep(0.1)
            kept = await http.get("/groups")
            assert kept.status_code == 200, kept.text  # the last list read
            await asyncio.sleep(0.7)
            refused = await http.get("/groups")
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "cannot check tokens: the store is unavailable"
            health = (await http.get("/health")).json()  # public: no token needed
            assert "broker_connected" in health, health
    finally:
        await server.stop()
        store.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_reconcile_is_logged_as_sent_by_the_ems(stack: Stack) -> None:
    """The operator's command is logged with the operator's name; when the agent comes
    back (an admin resets its session), the rest of it that the EMS re-sends by itself is
    logged with the EMS's id."""
    async with stack.client("operator") as operator, stack.client("admin") as admin:
        assert (await operator.post("/agents/bat-1/commands", json=CHARGE)).status_code == 200
        assert (await admin.post("/agents/bat-1/reset")).status_code == 200
        deadline = time.monotonic() + 5.0
        while len(log := (await admin.get("/commands")).json()) < 2:
            assert time.monotonic() < deadline, log
            await asyncio.sleep(0.05)
    assert [(e["call_id"].startswith("reconcile-"), e["sent_by"]) for e in log] == [
        (True, "ems-api"),
        (False, "olivia"),
    ]
