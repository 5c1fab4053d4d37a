"""``sef broker``: a local Mosquitto with SEF's production settings, sized for a fleet.

``sef broker --agents N`` writes the broker directory (``--broker-dir``: configuration,
log, persistence and, secure, the TLS files and ACL of ``sef pki broker-config``) and runs
Mosquitto in the foreground until Ctrl-C or SIGTERM. ``--print-config`` writes the
``mosquitto.conf`` it would run with to stdout instead, for an operator's own service
manager. The settings and their reasons are in :mod:`sef.broker_fleet`.

Secure by default: mutual TLS with client certificates of the deployment CA (``--pki``,
default ``$SEF_PKI_DIR`` else ``./pki``) and the per-identity ACL; ``--insecure`` is the
explicit opt-out (plain MQTT, anonymous, on 127.0.0.1 unless ``--bind`` says otherwise).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from sef.broker import BrokerNotFound, Mosquitto, find_mosquitto
from sef.broker_fleet import (
    DEFAULT_AGENTS,
    FleetSizing,
    agents_for_descriptors,
    raise_nofile_limit,
)
from sef.broker_shards import ShardedBroker

__all__ = ["broker"]

log = logging.getLogger("sef.broker")
err = Console(stderr=True, soft_wrap=True)

EXIT_USAGE = 2
DEFAULT_TLS_PORT = 8883
DEFAULT_PLAIN_PORT = 1883


class _Stop(Exception):
    """SIGTERM arrived: stop the broker like Ctrl-C does."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _refuse(message: str) -> typer.Exit:
    """Print a usage error (logged too) and return the exit to raise."""
    log.error("sef broker: %s", message)
    err.print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(EXIT_USAGE)


def _descriptor_note(agents: int) -> tuple[str, bool]:
    """What this process's (raised) open-file limit allows, and whether ``agents`` fit."""
    soft, hard = raise_nofile_limit()
    allowed = agents_for_descriptors(soft)
    if agents <= allowed:
        return f"open files {soft} (hard limit {hard}): room for {allowed} agents", True
    return (
        f"--agents {agents} exceeds what this broker can connect: its open-file limit is "
        f"{soft} (hard limit {hard}), room for {allowed} agents. Raise the hard limit "
        "(systemd LimitNOFILE=, limits.conf, `ulimit -Hn` as root) or spread the fleet "
        "over several brokers; the queues are sized for all of them anyway"
    ), False


def _secure_files(
    pki: Path,
    broker_dir: Path,
    port: int,
    bind: str | None,
    hosts: list[str],
    root: str,
    user: str | None,
    tuning: str,
) -> Path:
    """Write the mutual-TLS + ACL broker directory with the production tuning; its
    configuration's path."""
    from sef.security import CertificateAuthority, SecurityError, write_broker_config

    try:
        ca = CertificateAuthority.open(pki)
        files = write_broker_config(
            ca,
            broker_dir,
            port=port,
            hosts=tuple(hosts),
            root=root,
            bind=bind,
            user=user,
            tuning=tuning,
        )
    except (SecurityError, OSError, ValueError) as exc:
        raise _refuse(
            f"no usable CA in {pki} ({exc}): create one with `sef pki init --dir {pki}`, "
            "pass --pki, or run a lab broker with --insecure"
        ) from None
    return files.conf


def broker(
    agents: Annotated[
        int, typer.Option("--agents", help="Agents the broker is sized for (queues, files).")
    ] = DEFAULT_AGENTS,
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="Write the mosquitto.conf to stdout and exit."),
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="Listener port (default 8883; 1883 insecure).")
    ] = None,
    bind: Annotated[
        str | None,
        typer.Option("--bind", help="Address to listen on (default: all; 127.0.0.1 insecure)."),
    ] = None,
    broker_dir: Annotated[
        Path,
        typer.Option(
            "--broker-dir",
            help="Broker directory: configuration, log, persistence, TLS files and ACL.",
        ),
    ] = Path("broker"),
    pki: Annotated[
        Path,
        typer.Option(
            "--pki", envvar="SEF_PKI_DIR", help="The CA directory (default: $SEF_PKI_DIR, ./pki)."
        ),
    ] = Path("pki"),
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Name or address in the broker certificate (repeat)."),
    ] = None,
    root: Annotated[str, typer.Option("--root", help="SEF topic root (for the ACL).")] = "sef",
    user: Annotated[
        str | None,
        typer.Option("--user", help="Account Mosquitto runs as when started as root."),
    ] = None,
    max_keepalive: Annotated[
        int, typer.Option("--max-keepalive", help="Largest MQTT 5 client keepalive, s.")
    ] = 120,
    persistence: Annotated[
        bool,
        typer.Option(
            "--persistence/--no-persistence",
            help="Keep retained state and sessions in BROKER_DIR/data across restarts.",
        ),
    ] = True,
    shards: Annotated[
        int,
        typer.Option(
            "--shards",
            min=1,
            help="Edge brokers bridged to a core, on --port+1.. (for more agents than one "
            "process has sockets; needs --insecure for now).",
        ),
    ] = 1,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            envvar="SEF_INSECURE",
            help="LAB ONLY: plain MQTT, anonymous clients, no ACL.",
        ),
    ] = False,
) -> None:
    """Run Mosquitto with SEF's production settings for --agents agents (foreground,
    Ctrl-C stops it), or print its mosquitto.conf (--print-config).

    Exit codes: 0 stopped by Ctrl-C/SIGTERM or config printed; 1 Mosquitto failed;
    2 bad option or no CA."""
    listen_port = port if port is not None else DEFAULT_PLAIN_PORT if insecure else DEFAULT_TLS_PORT
    if not 1 <= listen_port <= 65535:
        raise _refuse(f"--port {listen_port} is outside 1..65535")
    if bind is not None and (not bind or any(c.isspace() for c in bind)):
        raise _refuse(f"invalid --bind address {bind!r}")
    broker_dir = broker_dir.absolute()
    try:
        fleet = FleetSizing(
            agents=agents,
            max_keepalive_s=max_keepalive,
            data_dir=broker_dir / "data" if persistence else None,
        )
    except ValueError as exc:
        raise _refuse(str(exc)) from None
    note, fits = _descriptor_note(-(-agents // shards))
    if shards > 1:
        if not insecure:
            raise _refuse(
                "--shards needs --insecure for now: with mutual TLS each edge needs a broker "
                "identity the core's ACL lets bridge every agent's topics (not generated yet)"
            )
        _sharded(
            agents, shards, listen_port, bind or "127.0.0.1", broker_dir, persistence,
            max_keepalive, user, print_config, note, fits,
        )  # fmt: skip
        return
    tuning = fleet.config() + (f"user {user}\n" if user and insecure else "")
    try:
        broker_dir.mkdir(parents=True, exist_ok=True)
        if fleet.data_dir is not None:
            fleet.data_dir.mkdir(exist_ok=True)
            _hand_over(fleet.data_dir, user)
    except OSError as exc:
        raise _refuse(f"cannot create {broker_dir}: {exc}") from None
    host_addr = bind or ("127.0.0.1" if insecure else "")
    if insecure:
        mosquitto = Mosquitto(
            port=listen_port,
            host=host_addr,
            workdir=broker_dir,
            tuning=tuning,
            die_with_parent=True,
        )
        text = mosquitto.config_text()
    else:
        conf_file = _secure_files(
            pki, broker_dir, listen_port, bind, host or [], root, user, fleet.config()
        )
        mosquitto = Mosquitto(
            port=listen_port,
            host=bind or "127.0.0.1",
            workdir=broker_dir,
            config_file=conf_file,
        )
        text = conf_file.read_text()
    if print_config:
        sys.stdout.write(text)
        err.print(escape(note), style=None if fits else "yellow", highlight=False)
        return
    scheme = "mqtt" if insecure else "mqtts"
    _run(
        [mosquitto],
        f"{scheme}://{mosquitto.host or '0.0.0.0'}:{mosquitto.port} for {fleet.agents} agents "
        f"(queue {fleet.queued_messages} messages / {fleet.queued_bytes} bytes per client), "
        f"config {mosquitto.config_path}, log {mosquitto.log_path}",
        insecure=insecure,
        note=(note, fits),
    )


def _sharded(
    agents: int,
    shards: int,
    port: int,
    host: str,
    broker_dir: Path,
    persistence: bool,
    max_keepalive: int,
    user: str | None,
    print_config: bool,
    note: str,
    fits: bool,
) -> None:
    """``--shards N``: a core on ``port`` and N bridged edges on the next ports."""
    if port + shards > 65535:
        raise _refuse(f"--port {port} leaves no room for {shards} edge ports above it")
    sharded = ShardedBroker(
        agents=agents,
        shards=shards,
        host=host,
        port=port,
        edge_ports=tuple(port + 1 + i for i in range(shards)),
        workdir=broker_dir,
        max_keepalive_s=max_keepalive,
        persistence=persistence,
        user=user,
    )
    brokers = sharded.plan()
    for data in sharded.data_dirs():
        _hand_over(data, user)
    names = ["core", *(f"edge-{i}" for i in range(shards))]
    if print_config:
        for name, broker in zip(names, brokers, strict=True):
            sys.stdout.write(f"# ==== {name}: {broker.config_path} ====\n{broker.config_text()}")
        err.print(escape(note), style=None if fits else "yellow", highlight=False)
        return
    err.print(
        f"sef broker: {agents} agents over {shards} edges ({sharded.per_edge} each); "
        f"{escape(note)} per edge",
        style=None if fits else "yellow",
        highlight=False,
    )
    _run(
        brokers,
        f"core mqtt://{host}:{port} (EMS, tools); agents on "
        + ", ".join(f"mqtt://{host}:{port + 1 + i}" for i in range(shards)),
        insecure=True,
    )


def _hand_over(path: Path, user: str | None) -> None:
    """As root, give ``path`` to the account Mosquitto drops to (it writes there)."""
    if os.geteuid() != 0 or user == "root":
        return
    import pwd

    try:
        account = pwd.getpwnam(user or "mosquitto")
    except KeyError:
        return
    os.chown(path, account.pw_uid, account.pw_gid)


def _run(
    brokers: list[Mosquitto],
    where: str,
    *,
    insecure: bool,
    note: tuple[str, bool] | None = None,
) -> None:
    """Start the brokers, echo their logs to stderr until Ctrl-C/SIGTERM or one exits,
    stop them all."""
    try:
        find_mosquitto()
    except BrokerNotFound as exc:
        raise _refuse(str(exc)) from None
    if insecure:
        err.print(
            "[bold yellow]WARNING:[/] sef broker runs INSECURE (--insecure): plain-text MQTT, "
            "anonymous clients, no ACL. For a lab only.",
            highlight=False,
        )
    offsets = [b.log_path.stat().st_size if b.log_path.exists() else 0 for b in brokers]
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        try:
            for broker in brokers:
                broker.start()
        except RuntimeError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        if note is not None:
            err.print(escape(note[0]), style=None if note[1] else "yellow", highlight=False)
        err.print(f"sef broker running on {where}; Ctrl-C stops it", highlight=False)
        code = _follow(brokers, offsets)
    except (KeyboardInterrupt, _Stop):
        code = None
    finally:
        signal.signal(signal.SIGTERM, previous)
        for broker in reversed(brokers):
            broker.stop()
    if code:  # 0: Mosquitto itself was stopped (a terminal's Ctrl-C reaches it too)
        err.print(f"[red]mosquitto exited with {code}[/]")
        raise typer.Exit(1)
    err.print("[yellow]stopped[/]")


def _follow(brokers: list[Mosquitto], offsets: list[int]) -> int:
    """Echo the brokers' logs from ``offsets`` to stderr while they run (each line
    prefixed with its broker's directory name when there are several); the exit code of
    the first that ends."""
    prefix = len(brokers) > 1
    while True:
        for index, broker in enumerate(brokers):
            process = broker.process
            assert process is not None
            code = process.poll()
            try:
                with broker.log_path.open("rb") as handle:
                    handle.seek(offsets[index])
                    chunk = handle.read()
            except OSError:
                chunk = b""
            if chunk:
                offsets[index] += len(chunk)
                text = chunk.decode(errors="replace")
                if prefix:
                    name = broker.log_path.parent.name
                    text = "".join(f"{name}: {line}" for line in text.splitlines(keepends=True))
                sys.stderr.write(text)
                sys.stderr.flush()
            if code is not None:
                return code
        time.sleep(0.2)
