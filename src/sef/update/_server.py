"""A static HTTP server of a repository's ``metadata/`` and ``targets/`` (demos and tests).

TUF needs no trusted transport: everything served is verified by the agent against its
trusted root, so plain HTTP is enough to demonstrate and test. Only ``metadata/`` and
``targets/`` are served: never ``keys/`` or anything else in the repository directory,
and no directory listings.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["PUBLISHED_DIRS", "RepositoryServer"]

logger = logging.getLogger(__name__)

PUBLISHED_DIRS = ("metadata", "targets")
"""The only top-level directories of a repository that are served."""


class _RepositoryHandler(SimpleHTTPRequestHandler):
    """Serves files under ``metadata/`` and ``targets/``; 404 for everything else."""

    def send_head(self) -> Any:
        """Refuse paths outside the published directories, then serve the file."""
        root = Path(self.directory).resolve()
        wanted = Path(self.translate_path(self.path)).resolve()
        published = any(wanted.is_relative_to(root / top) for top in PUBLISHED_DIRS)
        if not published or not wanted.is_file():
            self.send_error(404, "not published")
            return None
        return super().send_head()

    def list_directory(self, path: Any) -> None:
        """No directory listings."""
        self.send_error(404, "not published")

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests at DEBUG instead of printing them to stderr."""
        logger.debug("%s %s", self.address_string(), format % args)


class RepositoryServer:
    """Serve ``directory`` over HTTP from a background thread.

    Args:
        directory: the repository directory (``metadata/`` and ``targets/`` inside).
        host: address to bind (default loopback).
        port: TCP port; 0 picks a free one (see :attr:`url`).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = partial(_RepositoryHandler, directory=str(directory))
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sef-update-serve", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The repository's base URL (``http://host:port/``)."""
        host = str(self._server.server_address[0])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RepositoryServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
