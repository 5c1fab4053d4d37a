"""``sef cluster``: a local NATS cluster with EMS workers sharing the ingest (issue 16
items 5 and 6, ``docs/cluster-plan.md`` §4.1): ``sef cluster up`` for tests and demos,
``sef cluster worker`` for one worker (``up`` starts them)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from sef.cli._signals import EXIT_USAGE, run_service, until_stopped

__all__ = ["app"]

app = typer.Typer(
    help="A local broker cluster (NATS, MQTT listeners) with EMS workers sharing the ingest.",
    no_args_is_help=True,
)
_err = Console(stderr=True)

INSECURE_NOTE = (
    "INSECURE: the local cluster is plaintext MQTT and NATS without authentication, and the "
    "workers' APIs take every request: for tests and demos on this machine only"
)


def _refuse(message: str) -> typer.Exit:
    _err.print(f"[red]error:[/] {message}")
    return typer.Exit(EXIT_USAGE)


@app.command("up")
def up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Broker nodes.")] = 3,
    workers: Annotated[int, typer.Option("--workers", min=1, help="EMS worker processes.")] = 2,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Directory for the nodes' stores and logs (default: temporary)."
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="The workers' database URL (default: a PostgreSQL here)."),
    ] = None,
    api_port: Annotated[
        int,
        typer.Option("--api-port", help="First worker's API port, the next ones follow (0: free)."),
    ] = 0,
    ack_wait: Annotated[
        float,
        typer.Option("--ack-wait", min=1.0, help="Seconds before a dead worker's share moves."),
    ] = 30.0,
    max_agents: Annotated[
        int, typer.Option("--max-agents", min=1, help="Most agents in each worker's registry.")
    ] = 10_000,
    worker_log_level: Annotated[
        str, typer.Option("--worker-log-level", help="The workers' log level.")
    ] = "WARNING",
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Required: the local cluster has no TLS and no auth."),
    ] = False,
) -> None:
    """Start NODES broker nodes, a PostgreSQL and WORKERS EMS workers; Ctrl-C stops all."""
    if not insecure:
        raise _refuse(
            "sef cluster up needs --insecure for now: the local cluster has no TLS, no broker "
            "accounts and open worker APIs (a secured cluster is not generated yet)"
        )
    from sef.cluster import ClusterNotFound, LocalCluster

    _err.print(f"[bold yellow]{INSECURE_NOTE}[/]")
    local = LocalCluster(
        nodes=nodes,
        workers=workers,
        workdir=directory,
        store_url=store,
        api_port=api_port,
        ack_wait_s=ack_wait,
        log_level=worker_log_level,
        max_agents=max_agents,
    )
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        local.start()
    except (ClusterNotFound, RuntimeError, OSError) as exc:
        signal.signal(signal.SIGTERM, previous)
        raise _refuse(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    assert local.broker is not None
    print(f"broker nodes (MQTT, for agents' --broker): {','.join(local.broker.urls)}")
    print(f"NATS: {','.join(local.broker.nats_urls)}")
    print(f"store: {local.store_url}")
    for proc in local.procs:
        print(f"worker {proc.worker_id}: API on {proc.api_url}")
    print("Ctrl-C stops everything", flush=True)
    try:
        while not stopping:
            for proc in local.procs:
                if not proc.running and proc.process.returncode not in (None, 0, -9):
                    _err.print(
                        f"[yellow]worker {proc.worker_id} exited with {proc.process.returncode}[/]"
                    )
                    proc.process.returncode = -9  # reported once
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _err.print("stopping the workers, the nodes and the store")
        local.stop()
        signal.signal(signal.SIGTERM, previous)


@app.command("worker")
def worker(
    worker_id: Annotated[str, typer.Option("--id", help="This worker's id (unique).")],
    nats: Annotated[str, typer.Option("--nats", help="The cluster's NATS URLs, comma list.")],
    broker: Annotated[
        str, typer.Option("--broker", help="The cluster's MQTT URLs, comma list (calls).")
    ],
    store: Annotated[str, typer.Option("--store", help="The shared database URL.")],
    api: Annotated[
        str, typer.Option("--api", help="HOST:PORT of this worker's API (port 0: free).")
    ] = "127.0.0.1:0",
    ack_wait: Annotated[
        float, typer.Option("--ack-wait", min=1.0, help="Seconds before a dead share moves.")
    ] = 30.0,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Messages per fetch.")] = 256,
    max_agents: Annotated[
        int, typer.Option("--max-agents", min=1, help="Most agents in the registry.")
    ] = 10_000,
    new_agents_per_s: Annotated[
        float, typer.Option("--new-agents-per-s", min=0.1, help="New agents admitted per s.")
    ] = 100.0,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Required: plaintext, open API (lab use).")
    ] = False,
) -> None:
    """One EMS worker of a cluster (``sef cluster up`` starts them)."""
    if not insecure:
        raise _refuse("sef cluster worker needs --insecure for now (no TLS, open API)")
    host, _, port_text = api.rpartition(":")
    if not host or not port_text.isdigit():
        raise _refuse(f"--api {api!r}: expected HOST:PORT")
    from sef.cluster import WorkerEMS
    from sef.ems import Admission
    from sef.ems._leader import leadership_for
    from sef.ems.api import ApiAuth, serve_api
    from sef.ems.store import Store, StoreError

    try:
        database = Store.open(store)
    except StoreError as exc:
        raise _refuse(str(exc)) from None

    async def main() -> None:
        service = WorkerEMS(
            broker,
            nats.split(","),
            worker_id,
            store=database,
            ack_wait_s=ack_wait,
            batch=batch,
            admission=Admission(max_agents=max_agents, new_per_s=new_agents_per_s),
        )
        await service.start(timeout_s=None)
        # PostgreSQL: one worker is the leader (advisory lock) and re-sends intents
        service.leadership = leadership_for(database, worker_id)
        server = None
        try:
            await service.leadership.start()
            server = await serve_api(service, host, int(port_text), auth=ApiAuth.open())
            print(f"worker {worker_id}: API on {server.url}", flush=True)
            await until_stopped()
        finally:
            if server is not None:
                await server.stop()
            await service.leadership.stop()
            await service.stop()
            database.close()

    run_service(main(), name=f"cluster worker {worker_id}")
    sys.stdout.flush()
