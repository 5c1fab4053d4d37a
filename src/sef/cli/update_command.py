"""``sef update``: signed software updates with The Update Framework (TUF).

Publisher: ``init`` makes a repository, ``publish`` signs a release into it, ``timestamp``
re-signs the online roles before they expire, ``serve`` serves it over HTTP for demos.
Agent: ``check`` reports whether a newer verified release exists, ``install`` installs it.

Exit codes: 0 done (or up to date), 1 error (bad arguments, repository unreachable, hook
failed), 2 update refused by a security check (the running version is kept).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from sef.update import UpdateClient, UpdateRefused

# sef.update (tuf, urllib3) is imported inside the commands: it would add ~0.3 s to the
# start of every other sef command.
DEFAULT_NAME = "sef"
"""Release name by default (the same as ``sef.update.DEFAULT_NAME``)."""

__all__ = ["app"]

app = typer.Typer(
    help="Signed software updates (TUF): publish releases; check for and install them.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

EXIT_ERROR = 1
EXIT_REFUSED = 2

RepoOption = Annotated[
    Path, typer.Option("--repo", help="Repository directory (made by sef update init).")
]
KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="Private key directory (default: REPO/keys)."),
]
NameOption = Annotated[str, typer.Option("--name", help="Release name.")]
UrlOption = Annotated[str, typer.Option("--url", help="Repository base URL.")]
RootOption = Annotated[
    Path,
    typer.Option(
        "--trusted-root",
        help="Root metadata shipped with the agent (the repository's metadata/1.root.json).",
    ),
]
StateOption = Annotated[
    Path, typer.Option("--state", help="Agent update state directory (cache, releases).")
]


@app.callback()
def _main() -> None:
    """Signed software updates (TUF): publish releases; check for and install them."""


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _refused(exc: UpdateRefused) -> NoReturn:
    err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_REFUSED)


@app.command("init")
def init(
    repo: RepoOption,
    keys: KeysOption = None,
    expires_days: Annotated[
        float, typer.Option(help="Lifetime of root and targets metadata, days.")
    ] = 365.0,
    online_expires_days: Annotated[
        float, typer.Option(help="Lifetime of snapshot and timestamp metadata, days.")
    ] = 7.0,
    root_keys: Annotated[int, typer.Option(help="Number of root keys.")] = 1,
    threshold: Annotated[int, typer.Option(help="Root keys needed to sign root.")] = 1,
    key_type: Annotated[str, typer.Option(help="ecdsa (P-256) or ed25519.")] = "ecdsa",
) -> None:
    """Create a repository: keys (mode 0600) and signed root, targets, snapshot, timestamp."""
    from sef.update import KeyType, PublishError, UpdateRepository

    if key_type not in ("ecdsa", "ed25519"):
        _fail(f"--key-type must be ecdsa or ed25519, got {key_type!r}")
    kind: KeyType = "ed25519" if key_type == "ed25519" else "ecdsa"
    try:
        created = UpdateRepository.create(
            repo,
            keys_dir=keys,
            expires_days=expires_days,
            online_expires_days=online_expires_days,
            root_keys=root_keys,
            threshold=threshold,
            key_type=kind,
        )
    except (PublishError, OSError) as exc:
        _fail(str(exc))
    console.print(
        f"update repository created in {escape(str(repo))}", highlight=False, soft_wrap=True
    )
    console.print(
        f"keys: {escape(str(created.keys_dir))} (move root-* and targets-* offline)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"ship to agents as --trusted-root: {escape(str(created.trusted_root_path))}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("publish")
def publish(
    file: Annotated[Path, typer.Argument(help="The release file.")],
    repo: RepoOption,
    version: Annotated[str, typer.Option("--version", help="Release version X.Y.Z.")],
    name: NameOption = DEFAULT_NAME,
    keys: KeysOption = None,
) -> None:
    """Sign FILE into the repository as the latest release NAME VERSION."""
    from sef.update import PublishError, UpdateRepository

    try:
        release = UpdateRepository(repo, keys).publish(file, version, name)
    except (PublishError, OSError) as exc:
        _fail(str(exc))
    console.print(
        f"published {escape(release.name)} {release.version}: {escape(release.path)} "
        f"({release.length} bytes, sha256 {release.sha256})",
        highlight=False,
        soft_wrap=True,
    )


@app.command("timestamp")
def timestamp(repo: RepoOption, keys: KeysOption = None) -> None:
    """Re-sign snapshot and timestamp with a fresh expiry (run it from cron)."""
    from sef.update import PublishError, UpdateRepository

    try:
        UpdateRepository(repo, keys).refresh_online()
    except (PublishError, OSError) as exc:
        _fail(str(exc))
    console.print("snapshot and timestamp re-signed", highlight=False, soft_wrap=True)


@app.command("serve")
def serve(
    repo: RepoOption,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8000,
) -> None:
    """Serve the repository's metadata/ and targets/ over HTTP until interrupted."""
    from sef.update import RepositoryServer

    if not (repo / "metadata").is_dir():
        _fail(f"{repo} is not an update repository (no metadata/)")
    try:
        server = RepositoryServer(repo, host, port)
    except OSError as exc:
        _fail(f"cannot serve on {host}:{port}: {exc}")
    console.print(f"serving {escape(str(repo))} at {server.url}", highlight=False, soft_wrap=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _client(url: str, trusted_root: Path, state: Path, name: str) -> UpdateClient:
    from sef.update import UpdateClient

    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        # the command prints the one-line outcome itself: no retry chatter, no duplicate
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        logging.getLogger("sef.update").setLevel(logging.ERROR)
    try:
        return UpdateClient(url, state, trusted_root, name=name)
    except (OSError, ValueError) as exc:
        _fail(str(exc))


@app.command("check")
def check(
    url: UrlOption,
    trusted_root: RootOption,
    state: StateOption,
    name: NameOption = DEFAULT_NAME,
) -> None:
    """Report whether a newer, verified release is available (installs nothing)."""
    from sef.update import UpdateError, UpdateRefused

    client = _client(url, trusted_root, state, name)
    running = client.current_version or "none"
    try:
        release = client.check()
    except UpdateRefused as exc:
        _refused(exc)
    except UpdateError as exc:
        _fail(f"{exc}; running version {running} kept")
    if release is None:
        console.print(f"up to date: {escape(name)} {running}", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"update available: {escape(name)} {release.version} (running {running})",
            highlight=False,
            soft_wrap=True,
        )


@app.command("install")
def install(
    url: UrlOption,
    trusted_root: RootOption,
    state: StateOption,
    name: NameOption = DEFAULT_NAME,
    then: Annotated[
        str | None,
        typer.Option(
            "--then",
            help="Command run after a successful install (gets SEF_UPDATE_VERSION, "
            "SEF_UPDATE_FILE, SEF_UPDATE_PREVIOUS in its environment).",
        ),
    ] = None,
) -> None:
    """Install the latest release if it is newer and passes every check."""
    from sef.update import UpdateError, UpdateRefused

    client = _client(url, trusted_root, state, name)
    running = client.current_version
    try:
        installed = client.update()
    except UpdateRefused as exc:
        _refused(exc)
    except UpdateError as exc:
        _fail(f"{exc}; running version {running or 'none'} kept")
    if installed is None:
        console.print(
            f"up to date: {escape(name)} {running or 'none'}", highlight=False, soft_wrap=True
        )
        return
    version = client.current_version or "?"
    console.print(
        f"installed {escape(name)} {version} (was {running or 'none'}): {escape(str(installed))}",
        highlight=False,
        soft_wrap=True,
    )
    if then is not None:
        _run_hook(then, version, installed, running)


def _run_hook(command: str, version: str, installed: Path, previous: str | None) -> None:
    """Run ``--then``; a failure is reported (exit 1) but the install stays."""
    env = {
        **os.environ,
        "SEF_UPDATE_VERSION": version,
        "SEF_UPDATE_FILE": str(installed),
        "SEF_UPDATE_PREVIOUS": previous or "",
    }
    try:
        done = subprocess.run(shlex.split(command), env=env, check=False)
    except (OSError, ValueError) as exc:
        _fail(f"--then {command!r} could not run: {exc} (release {version} stays installed)")
    if done.returncode != 0:
        _fail(
            f"--then {command!r} exited with {done.returncode} (release {version} stays installed)"
        )
