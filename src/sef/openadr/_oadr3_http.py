"""HTTP helpers of the OpenADR 3 VEN adapter (:mod:`sef.openadr._oadr3`): answers read with
a size limit, and the bookkeeping of a paged list that a hostile VTN cannot make endless.

A VTN is not trusted to keep its answers small nor to honour ``skip``: an answer body is
read in chunks and refused as soon as it passes the limit (a ``Content-Length`` above it
is refused before any body is read); a paged list fails when a full page brings no new id
or when it holds more objects than the adapter accepts per poll (docs/robustness.md,
"Demand response (OpenADR)").
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from sef.openadr._oadr3_config import Oadr3Config

__all__ = ["Pager", "VtnError", "fetch_token", "read_capped"]


class VtnError(Exception):
    """An exchange with the VTN failed (unreachable, refused, or an unreadable answer)."""


async def read_capped(
    client: httpx.AsyncClient, method: str, url: str, *, max_bytes: int, **kwargs: Any
) -> tuple[int, bytes]:
    """Send one request; its HTTP status and body (decoded of any content encoding).

    Args:
        client: the adapter's client.
        method: ``GET``, ``POST``...
        url: a path under the client's base URL, or an absolute URL.
        max_bytes: the largest body accepted, bytes.
        kwargs: passed to :meth:`httpx.AsyncClient.stream` (headers, params, json, data).

    Raises:
        VtnError: the body is larger than ``max_bytes`` (read no further).
        httpx.HTTPError: the exchange failed.
    """
    async with client.stream(method, url, **kwargs) as answer:
        declared = answer.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise VtnError(
                f"{method} {url}: answer too large: Content-Length {declared} bytes "
                f"> {max_bytes} (max_answer_bytes)"
            )
        body = bytearray()
        async for chunk in answer.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise VtnError(
                    f"{method} {url}: answer too large: over {max_bytes} bytes "
                    "(max_answer_bytes), not read further"
                )
        return answer.status_code, bytes(body)


class Pager:
    """The state of one paged list (``skip``/``limit``) while it is read.

    Args:
        path: the list's path, for messages.
        page_size: ``limit`` asked per page.
        max_objects: the most objects the list may hold.
    """

    def __init__(self, path: str, page_size: int, max_objects: int) -> None:
        self.path = path
        self.page_size = page_size
        self.max_objects = max_objects
        self.skip = 0
        """``skip`` of the next page: objects received so far."""
        self.found: list[dict[str, Any]] = []
        self._ids: set[str] = set()

    def take(self, page: Any) -> bool:
        """Add one page's objects (an id already seen is dropped); whether another page
        must be asked for.

        Raises:
            VtnError: not a JSON list; a full page of ids all seen before (a VTN ignoring
                ``skip``); more than ``max_objects`` objects.
        """
        if not isinstance(page, list):
            raise VtnError(f"GET {self.path}: expected a JSON list")
        new = 0
        for item in page:
            if not isinstance(item, dict):
                continue
            object_id = item.get("id")
            if isinstance(object_id, str):
                if object_id in self._ids:
                    continue
                self._ids.add(object_id)
            self.found.append(item)
            new += 1
        self.skip += len(page)
        full = len(page) >= self.page_size
        if full and not new:
            raise VtnError(
                f"GET {self.path}: the page at skip {self.skip - len(page)} repeats ids "
                "already seen (the VTN ignores paging): poll abandoned"
            )
        if len(self.found) > self.max_objects:
            raise VtnError(
                f"GET {self.path}: more than {self.max_objects} objects in one poll "
                "(max_events_per_poll, page after page): poll abandoned"
            )
        return full


async def fetch_token(client: httpx.AsyncClient, cfg: Oadr3Config) -> str:
    """An OAuth2 client-credentials token (endpoint: ``cfg.token_url``, else the VTN's
    ``GET /auth/server`` ``tokenURL``, else ``{vtn_url}/auth/token``).

    Raises:
        VtnError: refused, too large, or no ``access_token`` in the answer.
        ValueError: an answer is not JSON.
        httpx.HTTPError: the exchange failed.
    """
    assert cfg.client_id and cfg.client_secret
    url = cfg.token_url
    limit = cfg.max_answer_bytes
    if url is None:
        status, body = await read_capped(client, "GET", "/auth/server", max_bytes=limit)
        found = json.loads(body) if status == 200 else None
        url = found.get("tokenURL") if isinstance(found, dict) else None
        url = url if isinstance(url, str) and url else f"{cfg.vtn_url.rstrip('/')}/auth/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": cfg.client_id,
        "client_secret": cfg.client_secret,
    }
    if cfg.scopes:
        form["scope"] = " ".join(cfg.scopes)
    status, body = await read_capped(client, "POST", url, max_bytes=limit, data=form)
    if status != 200:
        text = body[:200].decode("utf-8", "replace")
        raise VtnError(f"token refused: HTTP {status} {text}")
    answer = json.loads(body)
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise VtnError("token answer has no access_token")
    return token
