"""The API's guards against hostile requests: the Host allow-list, CORS closed by default,
security headers, hostile credentials (a 100 KB token, NUL bytes, another scheme: 401 or
the HTTP parser's 400, never 500), the session cookie's CSRF rules, TLS, and the warnings
at start. Real uvicorn on real sockets; raw requests where httpx would refuse to send."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from api_stack import Stack
from sef.ems.api import ApiAuth, serve_api
from sef.ems.api._auth import MAX_TOKEN_CHARS, Unauthorized, bearer_token, required_role
from sef.ems.store import Store
from sef.security import CertificateAuthority, Role

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

CHARGE = {"cmds": [["charge", 4, 600]]}


async def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, without the final blank line) over a new
    connection; the answer's status and body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@SQLITE
async def test_hostile_credentials_are_refused_never_a_crash(stack: Stack) -> None:
    get = b"GET /agents HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    cases = {
        "100 KB token": (b"Authorization: Bearer " + b"a" * 100_000, 401),
        "100 KB cookie": (b"Cookie: sef_token=" + b"a" * 100_000, 401),
        "another scheme": (b"Authorization: Basic dXNlcjpwYXNz", 401),
        "no token": (b"Authorization: Bearer ", 401),
        "two headers": (b"Authorization: Bearer a\r\nAuthorization: Bearer b", 401),
        "UTF-8 token": ("Authorization: Bearer é".encode(), 401),
        "NUL in the token": (b"Authorization: Bearer abc\x00def", 400),  # the HTTP parser
        "NUL in the cookie": (b"Cookie: sef_token=a\x00b", 400),
        "a broken cookie": (b"Cookie: ;;;===;sef_token", 401),
    }
    for name, (header, expected) in cases.items():
        status, body = await raw_request(stack.url, get + header)
        assert status == expected, (name, status, body[:200])
        if status == 401:
            assert len(body) < 400 and b"aaaaaaaa" not in body, name  # nothing echoed
    login = await stack.http.post(
        "/login", json={"token": "abc\u0000def"}, headers={"x-sef-csrf": "1"}
    )
    assert login.status_code == 401 and "characters a token cannot have" in login.text
    assert (await stack.http.get("/agents")).status_code == 200  # still serving


@given(st.text(max_size=300))
def test_bearer_parsing_refuses_clearly(header: str) -> None:
    """Whatever the Authorization header, the parser returns a plausible token or raises
    :class:`Unauthorized`, nothing else."""
    headers = Headers(raw=[(b"authorization", header.encode("latin-1", "replace"))])
    try:
        token = bearer_token(headers)
    except Unauthorized as exc:
        assert exc.message
        return
    assert token is not None and 0 < len(token) <= MAX_TOKEN_CHARS and token.isascii()


@SQLITE
async def test_hosts_not_allowed_get_400(stack: Stack) -> None:
    for host in ("evil.example", "attacker.test:8080", "127.0.0.1.nip.io"):
        response = await stack.http.get("/agents", headers={"Host": host})
        assert response.status_code == 400, host
        assert "is not served here" in response.json()["error"]
        assert "www-authenticate" not in response.headers  # refused before auth
    port = stack.server.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]"):
        assert (await stack.http.get("/agents", headers={"Host": host})).status_code == 200


@SQLITE
async def test_cors_is_closed_unless_origins_are_given(stack: Stack) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    answer = await stack.http.options("/agents/bat-1/commands", headers=preflight)
    assert "access-control-allow-origin" not in answer.headers
    simple = await stack.http.get("/agents", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers

    server = await serve_api(
        stack.ems,
        "127.0.0.1",
        0,
        auth=stack.server.auth,
        cors_origins=["https://ops.example"],
    )
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            allowed = await http.options(
                "/agents/bat-1/commands", headers={**preflight, "Origin": "https://ops.example"}
            )
            assert allowed.headers["access-control-allow-origin"] == "https://ops.example"
            evil = await http.options("/agents/bat-1/commands", headers=preflight)
            assert "access-control-allow-origin" not in evil.headers
    finally:
        await server.stop()


@SQLITE
async def test_security_headers(stack: Stack) -> None:
    api = await stack.http.get("/agents")
    assert api.headers["cache-control"] == "no-store"
    assert api.headers["x-frame-options"] == "DENY"
    assert api.headers["x-content-type-options"] == "nosniff"
    page = await stack.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


@SQLITE
async def test_session_cookie_and_csrf(stack: Stack) -> None:
    """``POST /login`` sets the cookie (with the CSRF header only); a cookie-authenticated
    POST needs the header and a same-origin Origin; logout clears the cookie."""
    token = stack.tokens["operator"]
    async with stack.client(None) as browser:
        refused = await browser.post("/login", json={"token": token})
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        login = await browser.post("/login", json={"token": token}, headers={"x-sef-csrf": "1"})
        assert login.status_code == 200 and login.json()["name"] == "olivia"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith(f"sef_token={token};")
        for attribute in ("HttpOnly", "Path=/", "SameSite=strict"):
            assert attribute in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback
        assert (await browser.get("/me")).json()["via"] == "cookie"
        plain = await browser.post("/agents/bat-1/commands", json=CHARGE)
        assert plain.status_code == 403 and "CSRF" in plain.json()["error"]
        cross = await browser.post(
            "/agents/bat-1/commands",
            json=CHARGE,
            headers={"x-sef-csrf": "1", "Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        same = await browser.post(
            "/agents/bat-1/commands",
            json=CHARGE,
            headers={"x-sef-csrf": "1", "Origin": stack.url},
        )
        assert same.status_code == 200 and same.json()["sent_by"] == "olivia"
        out = await browser.post("/logout", headers={"x-sef-csrf": "1"})
        assert out.status_code == 204 and 'sef_token=""' in out.headers["set-cookie"]
        assert (await browser.get("/agents")).status_code == 401
    assert stack.agents["bat-1"].executed == [[("charge", 4, 600)]]


@SQLITE
async def test_tls_serves_https_with_a_secure_cookie(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    _, key = ca.issue("ems-api", Role.EMS, hosts=("127.0.0.1", "localhost"))
    auth = ApiAuth.of_store(stack.store)
    with caplog.at_level(logging.WARNING, "sef.ems.api"):
        server = await serve_api(
            stack.ems, "127.0.0.1", 0, auth=auth, cert=ca.cert_path("ems-api"), key=key
        )
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(ca.ca_path))
        async with httpx.AsyncClient(base_url=server.url, verify=trust) as http:
            assert (await http.get("/agents")).status_code == 401
            login = await http.post(
                "/login", json={"token": stack.tokens["viewer"]}, headers={"x-sef-csrf": "1"}
            )
            assert login.status_code == 200
            cookie = login.headers["set-cookie"]
            assert cookie.startswith("__Host-sef_token=") and "Secure" in cookie
            assert (await http.get("/me")).json()["name"] == "victor"
        with pytest.raises(httpx.ConnectError):  # an unknown CA is refused by the client
            async with httpx.AsyncClient(base_url=server.url) as untrusting:
                await untrusting.get("/health")
    finally:
        await server.stop()
    assert not [r for r in caplog.records if "WITHOUT TLS" in r.getMessage()]


@SQLITE
async def test_warnings_at_start(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """Beyond loopback without TLS, and authentication off, are said loudly."""
    with caplog.at_level(logging.WARNING, "sef.ems.api"):
        wide = await serve_api(stack.ems, "0.0.0.0", 0, auth=stack.server.auth)
        await wide.stop()
        off = await serve_api(stack.ems, "127.0.0.1", 0, auth=ApiAuth.open())
        await off.stop()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0.0.0.0" in m and "WITHOUT TLS" in m for m in messages), messages
    assert any("AUTHENTICATION IS OFF" in m for m in messages), messages
    assert not any("127.0.0.1" in m and "WITHOUT TLS" in m for m in messages), messages
    assert not any("no API token yet" in m for m in messages), messages  # the stack has some


@SQLITE
async def test_an_empty_token_table_is_said_at_start(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = Store.open(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with caplog.at_level(logging.WARNING, "sef.ems.api"):
            server = await serve_api(stack.ems, "127.0.0.1", 0, auth=ApiAuth.of_store(empty))
            await server.stop()
    finally:
        empty.close()
    assert any("no API token yet" in r.getMessage() for r in caplog.records)


@SQLITE
async def test_openapi_declares_the_bearer_scheme(stack: Stack) -> None:
    async with stack.client("viewer") as viewer:
        schema = (await viewer.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["security"] == [{"bearer": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/agents/{agent_id}/commands"]["post"]


PUBLIC = {
    ("GET", "/health"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/web/login.js"),
    ("GET", "/web/style.css"),
}


@given(
    st.sampled_from(["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE"]),
    st.one_of(
        st.text(max_size=60).map(lambda t: "/" + t),
        st.sampled_from(["agents", "groups", "health", "login", "web", "openadr"]).flatmap(
            lambda first: st.text(max_size=40).map(lambda rest: f"/{first}/{rest}")
        ),
    ),
)
def test_the_role_policy_is_closed(method: str, path: str) -> None:
    """Only the listed requests are public; a request that may change state never needs
    less than an operator, and only a command path (and the live control target, the
    demand-response policy and opt overrides) is left to operators."""
    role = required_role(method, path)
    if role is None:
        assert ("GET" if method == "HEAD" else method, path) in PUBLIC
    elif method not in ("GET", "HEAD", "OPTIONS"):
        assert role in ("operator", "admin")
        if (method, path.rstrip("/")) in (("PUT", "/control/target"), ("PUT", "/openadr/policy")):
            return
        parts = path.rstrip("/").split("/")
        if role == "operator" and parts[1] == "openadr":
            assert method == "POST" and len(parts) == 6
            assert parts[2] == "events" and parts[5] == "opt"
        elif role == "operator":
            assert method == "POST" and path.rstrip("/").endswith("/commands")
            assert path.split("/")[1] in ("agents", "groups") and path.count("/") in (3, 4)


@SQLITE
async def test_path_tricks_do_not_lower_the_role(stack: Stack) -> None:
    async with stack.client("viewer") as viewer, stack.client("operator") as operator:
        for path in (
            "/agents/bat-1/commands/",
            "/agents/bat%2F1/commands",
            "//agents/bat-1/commands",
            "/health/../agents/bat-1/commands",
            "/login/../agents/bat-1/commands",
        ):
            assert (await viewer.post(path, json=CHARGE)).status_code == 403, path
        for path in ("/agents/bat-1/reset/", "/AGENTS/bat-1/approve", "/health/../agents"):
            assert (await operator.post(path)).status_code == 403, path
    async with stack.client(None) as anonymous:
        for path in ("/health/", "/Health", "/health/../agents", "/web/../agents", "/login/x"):
            answer = await anonymous.get(path)
            assert answer.status_code == 401, (path, answer.status_code)
    assert all(a.executed == [] for a in stack.agents.values())


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("[::1]:80", "[::1]"),
        ("ems.example:443", "ems.example"),
        ("[::zz]", None),
        ("a b", None),
        ("host:99999999", None),
        ("", None),
        (None, None),
        ("evil.example@127.0.0.1", None),
    ],
)
def test_host_of_parses_only_host_and_port(header: str | None, host: str | None) -> None:
    from sef.ems.api._guards import host_of

    assert host_of(header) == host


@given(st.text(max_size=300))
def test_host_of_never_raises(header: str) -> None:
    from sef.ems.api._guards import host_of

    result = host_of(header)
    assert result is None or result == result.lower()
