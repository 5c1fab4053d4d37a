"""``sef ems``: run the EMS service (registry, store, REST API) until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.live import Live

from sef.cli._outage import check_outage_budget
from sef.cli._security_options import (
    CA_OPTION,
    CERT_OPTION,
    CRL_OPTION,
    ENROLL_URL_OPTION,
    INSECURE_OPTION,
    KEY_OPTION,
    Credentials,
    secure_connection,
)
from sef.cli._signals import broker_usage, run_service, until_stopped
from sef.cli.bus_commands import BROKER_HELP, clock_option, console, err
from sef.ems import EMS, Event
from sef.ems._leader import DEFAULT_LEADER_KEY, leader_key, leadership_for
from sef.ems._leader_duties import LeaderDuties
from sef.ems.render import agents_table
from sef.security import Role
from sef.tasks import TaskSet

if TYPE_CHECKING:
    from sef.control.scenario import Scenario
    from sef.ems.store import Store


def ems(
    broker: str | None = typer.Option(None, "--broker", "-b", help=BROKER_HELP),
    host_id: str | None = typer.Option(
        None,
        "--id",
        help="Id of this EMS (primary host); default: its certificate's identity "
        "('ems' with --insecure).",
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        help="Store: sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DB. Without it nothing is kept "
        "across restarts.",
    ),
    clock: str | None = typer.Option(None, "--clock", help="real or scaled:SPEED[:START]."),
    keepalive: int = typer.Option(10, "--keepalive", help="MQTT keepalive, s."),
    json_events: bool = typer.Option(False, "--json", help="Print events as JSON lines."),
    api: str | None = typer.Option(
        None,
        "--api",
        help="Serve the REST API (docs at /docs, "
        "metrics at /metrics) on HOST:PORT, e.g. 127.0.0.1:8080.",
    ),
    control: str | None = typer.Option(
        None,
        "--control",
        help="Run a control app on this "
        "scenario (TOML file, or 'small' / 'reference') against "
        "the fleet online in the registry (agents with a Nameplate; re-read at every "
        "re-plan), from the next midnight on the clock.",
    ),
    controller: str = typer.Option("mpc", "--controller", help="mpc or baseline."),
    openadr: Path | None = typer.Option(
        None,
        "--openadr",
        help="Demand response: a TOML file naming the OpenADR VTN(s) this EMS is a VEN of "
        "(docs/openadr.md). Needs the sef[openadr] extra.",
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="With --control: write the report (PNG, CSV, summary.json) here at the end.",
    ),
    keep_days: float | None = typer.Option(
        None, "--keep-days", min=0.0, help="With --db: delete telemetry older than this."
    ),
    raw_days: float | None = typer.Option(
        None,
        "--raw-days",
        min=0.0,
        help="With --db: thin telemetry older than this to one value per --downsample-s.",
    ),
    downsample_s: float = typer.Option(
        900.0, "--downsample-s", min=1.0, help="Bucket of thinned telemetry, s."
    ),
    allow: list[str] = typer.Option(
        [],
        "--allow",
        help="Admit only these agent ids or glob patterns (repeatable), e.g. 'bat-*'.",
    ),
    approve_new: bool = typer.Option(
        False,
        "--approve-new",
        help="New agents (not on --allow) wait as pending until approved "
        "(sef registry approve ID).",
    ),
    max_agents: int = typer.Option(
        10_000, "--max-agents", min=0, help="Most agents in the registry (0: no cap)."
    ),
    new_agents_per_s: float = typer.Option(
        100.0, "--new-agents-per-s", min=0.0, help="New agents admitted per s (0: no limit)."
    ),
    new_agents_burst: int = typer.Option(
        2000, "--new-agents-burst", min=1, help="New agents admitted at once before the rate."
    ),
    pin_interface: list[Path] = typer.Option(
        [],
        "--pin-interface",
        help="Interface XML whose definitions no agent may change (repeatable); the "
        "shipped interfaces are always pinned.",
    ),
    bdseq_ahead: float = typer.Option(
        86400.0,
        "--bdseq-ahead-s",
        min=0.0,
        help="Refuse an agent status whose bdseq runs further ahead of the wall clock, s.",
    ),
    rebirth_rate: float = typer.Option(
        200.0,
        "--rebirth-rate",
        min=0.0,
        help="Most rebirth requests per second to agents whose birth the EMS holds only "
        "part of (e.g. dropped by the broker's queue at subscribe), and for sequence gaps; "
        "adaptive: starts at an eighth, halves while answers are lost. 0: never ask.",
    ),
    broker_config: Path | None = typer.Option(
        None,
        "--broker-config",
        help="The broker's mosquitto.conf: refuse to start when its queue for the EMS "
        "(max_queued_messages, max_queued_bytes) cannot hold the outage budget.",
    ),
    outage_budget_s: float | None = typer.Option(
        None,
        "--outage-budget-s",
        min=0.0,
        help="Longest store outage or EMS restart to ride out without loss, s (default 60).",
    ),
    expected_rate: float | None = typer.Option(
        None,
        "--expected-rate",
        min=0.0,
        help="Messages per second the agents publish to the EMS (default 2000).",
    ),
    max_future_s: float = typer.Option(
        300.0,
        "--max-future-s",
        min=0.0,
        help="Store: refuse (dead-letter) telemetry dated more than this after the EMS clock, s.",
    ),
    max_past_s: float | None = typer.Option(
        None,
        "--max-past-s",
        min=0.0,
        help="Store: refuse telemetry dated more than this before the EMS clock, s "
        "(default: no limit).",
    ),
    api_max_body: int = typer.Option(1 << 20, min=1, help="API: largest request body, bytes."),
    api_max_requests: int = typer.Option(256, min=1, help="API: requests handled at once."),
    api_max_streams: int = typer.Option(100, min=1, help="API: open /events streams."),
    api_max_connections: int = typer.Option(1000, min=1, help="API: open connections."),
    api_allowed_host: list[str] = typer.Option(
        [],
        "--api-allowed-host",
        help="API: also accept requests for this Host (repeatable; '*.example.com' "
        "patterns; always: localhost, 127.0.0.1, ::1 and the --api address).",
    ),
    api_cors_origin: list[str] = typer.Option(
        [], "--api-cors-origin", help="API: allow this web origin by CORS (repeatable)."
    ),
    api_cert: Path | None = typer.Option(
        None,
        "--api-cert",
        help="API: serve HTTPS with this certificate (PEM); operator certificates of "
        "the --ca then authenticate too.",
    ),
    api_key: Path | None = typer.Option(None, "--api-key", help="API: its private key (PEM)."),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
    enroll_url: str | None = ENROLL_URL_OPTION,
    worker_id: str | None = typer.Option(
        None,
        "--worker-id",
        help="Name of this EMS worker among several on one PostgreSQL store (default: its "
        "--id). With a PostgreSQL store the workers elect a leader (advisory lock) that alone "
        "runs --control, --openadr, retention and re-sends intents; ingest and the API run "
        "on every worker. With SQLite or no store this EMS is always the leader.",
    ),
    leader_key_option: str = typer.Option(
        DEFAULT_LEADER_KEY,
        "--leader-key",
        help="Name (or int64) of the advisory lock the workers of one deployment share; "
        "two deployments in one database need different keys.",
    ),
    require_signed_telemetry: bool = typer.Option(
        False,
        "--require-signed-telemetry",
        help="Check every agent's telemetry against its signed seals (docs/protocol.md §11; "
        "agents run with --sign-telemetry); failures are logged and stored as agent events.",
    ),
) -> None:
    """Run the EMS: discover agents, track presence, keep their last known state.

    SIGINT and SIGTERM stop it cleanly (last batch committed, ``shutdown`` status
    published) with exit code 0; 1 is a run-time error, 2 bad options.
    """

    def print_event(event: Event) -> None:
        if json_events:
            print(
                json.dumps(
                    {"event": event.kind, "agent": event.agent_id, "detail": event.detail},
                    default=str,
                ),
                flush=True,
            )

    secured = secure_connection(
        "sef ems",
        broker,
        Credentials(cert, key, ca, crl, insecure),
        roles=(Role.EMS,),
        identity=host_id,
    )
    ems_id = host_id or secured.identity or "ems"
    if require_signed_telemetry and secured.security is None:
        raise typer.BadParameter(
            "checking seals needs the deployment CA: give --cert/--key/--ca, not --insecure",
            param_hint="--require-signed-telemetry",
        )
    check_outage_budget(broker_config, outage_budget_s, expected_rate)
    try:
        lock_key = leader_key(leader_key_option)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--leader-key") from None
    listen: tuple[str, int] | None = None
    if api is not None:
        from sef.ems.api import parse_listen

        try:
            listen = parse_listen(api)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--api") from None
        if not insecure and db is None:
            raise typer.BadParameter(
                "the API authenticates with tokens kept in the store: give --db (and create "
                "a token with sef api-token create), or --insecure",
                param_hint="--api",
            )
        if (api_cert is None) != (api_key is None):
            raise typer.BadParameter("give both --api-cert and --api-key", param_hint="--api-cert")
    store: Store | None = None
    if db is not None:
        from sef.ems.store import Store, StoreError

        try:
            store = Store.open(db)
        except StoreError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from None

    scenario = None
    if control is not None:
        # the control app's libraries (scipy: the sef[control] extra) load now, so that a
        # missing one is named at start rather than failing the control task later
        import sef.control.controllers
        import sef.control.live  # noqa: F401
        from sef.control.scenario import load_scenario

        try:
            scenario = load_scenario(control)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--control") from None

    dr_config = None
    if openadr is not None:
        try:
            from sef.openadr import load_dr_config

            dr_config = load_dr_config(openadr)
        except ImportError as exc:
            raise typer.BadParameter(
                f"{exc}: install the sef[openadr] extra", param_hint="--openadr"
            ) from None
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--openadr") from None

    registry_options = _registry_options(
        allow,
        approve_new,
        max_agents,
        new_agents_per_s,
        new_agents_burst,
        pin_interface,
        bdseq_ahead,
    )

    async def main() -> None:
        with broker_usage():
            service = EMS(
                secured.broker,
                ems_id,
                clock=clock_option(clock),
                keepalive_s=keepalive,
                on_event=print_event,
                store=store,
                security=secured.security,
                require_signed_telemetry=require_signed_telemetry,
                rebirth_rate=rebirth_rate,
                **registry_options,
            )
        secured.harden(service.bus)
        if service.recorder is not None:
            service.recorder.max_future_s = max_future_s
            service.recorder.max_past_s = max_past_s
        await service.start(timeout_s=None)
        server = None
        background = TaskSet(f"sef ems {ems_id}")  # a failure is logged when it happens
        service.leadership = leadership_for(store, worker_id or ems_id, lock_key)
        elected = service.leadership.election != "none"
        duties = LeaderDuties(service.leadership, on_change=_print_duties if elected else None)
        try:
            await service.leadership.start()
            if dr_config is not None:

                async def start_dr() -> Any:
                    from sef.openadr import DrService

                    dr_service = DrService(service, dr_config, live_control=scenario is not None)
                    await dr_service.start()
                    return dr_service

                duties.add_service("openadr", start_dr, lambda dr: dr.stop())
            if enroll_url is not None and secured.security is not None:
                from sef.security import CertificateRenewer

                renewer = CertificateRenewer(
                    secured.security, enroll_url, on_renewed=lambda _: secured.harden(service.bus)
                )  # the next reconnection presents the renewed certificate
                background.spawn(renewer.run(), name="certificate renewal")
            if store is not None and (keep_days is not None or raw_days is not None):
                duties.add(
                    "retention",
                    lambda: retention(service, store, keep_days, raw_days, downsample_s),
                )
            if scenario is not None:
                duties.add("control", lambda: run_control(service, scenario, controller, report))
            await duties.start()  # now if leader (always without an election), else later
            if elected:
                print(
                    f"leader election: worker {service.leadership.worker_id}, advisory lock "
                    f"{lock_key} on the store",
                    flush=True,
                )
            if listen is not None:
                from sef.ems.api import ApiAuth, ApiLimits, default_hosts, serve_api

                try:
                    limits = ApiLimits(
                        api_max_body, api_max_requests, api_max_streams, api_max_connections
                    )
                    server = await serve_api(
                        service,
                        *listen,
                        limits=limits,
                        auth=ApiAuth.open() if insecure else None,
                        allowed_hosts=[*default_hosts(listen[0]), *api_allowed_host],
                        cors_origins=api_cors_origin,
                        cert=api_cert,
                        key=api_key,
                        # with TLS, operator certificates of the deployment CA log in too
                        client_certs=(
                            secured.security.trust
                            if secured.security is not None and api_cert is not None
                            else None
                        ),
                    )
                except OSError as exc:
                    err.print(f"[red]error:[/] cannot serve the API on {api}: {exc}")
                    raise typer.Exit(2) from None
                print(f"API on {server.url}", flush=True)
            if json_events or not sys.stdout.isatty():
                if not json_events:
                    print(
                        f"EMS {ems_id} running on {service.bus.url}"
                        + (f", store {db}" if db else ""),
                        flush=True,
                    )
                await until_stopped()
                return
            stop = asyncio.ensure_future(until_stopped())
            with Live(
                agents_table(service.agents()), console=console, refresh_per_second=2
            ) as live:
                while not stop.done():
                    await asyncio.wait({stop}, timeout=0.5)
                    # a home column once gateways have named their agents
                    homes = service.homes.home_of or None
                    title = f"SEF agents on {secured.broker}"
                    live.update(agents_table(service.agents(), title, homes))
        finally:
            await duties.close()
            await service.leadership.stop()
            await background.close()
            if server is not None:
                await server.stop()
            try:
                await asyncio.wait_for(service.stop(), 15.0)
            except TimeoutError:
                err.print("[yellow]EMS shutdown timed out; exiting anyway[/]")
            if store is not None:
                store.close()

    run_service(main(), name=f"ems {ems_id}")


def _print_duties(running: bool) -> None:
    """Say when this worker took up or gave up the control side (several EMS workers on
    a PostgreSQL store)."""
    if running:
        print("leader: this EMS worker runs the control side", flush=True)
    else:
        print("standby: the control side runs on the leader, not here", flush=True)


def _registry_options(
    allow: list[str],
    approve_new: bool,
    max_agents: int,
    new_agents_per_s: float,
    new_agents_burst: int,
    pin_interface: list[Path],
    bdseq_ahead: float,
) -> dict[str, Any]:
    """The EMS's admission, pinned interfaces and bdseq margin from the options."""
    from sef.ems import Admission
    from sef.interface import InterfaceError, load_file

    pinned = []
    for path in pin_interface:
        try:
            pinned += list(load_file(path).interfaces.values())
        except (OSError, InterfaceError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--pin-interface") from None
    return {
        "admission": Admission(
            allow=tuple(allow),
            approval=approve_new,
            max_agents=max_agents or None,
            new_per_s=new_agents_per_s or None,
            burst=new_agents_burst,
        ),
        "pinned_interfaces": pinned,
        "bdseq_ahead_s": bdseq_ahead,
    }


async def run_control(
    service: EMS,
    scenario: Scenario,
    controller: str,
    report: Path | None,
) -> None:
    """Live mode: run the control app for the scenario on the fleet online, report.

    The fleet is whatever the registry holds at each re-plan (agents with a nameplate),
    so agents may come and go; the scenario gives the base-load forecast and the target.
    """
    from sef.control.controllers import make_controller
    from sef.control.live import LiveControl, next_midnight
    from sef.control.report import write_report

    start = next_midnight(service.clock.now())
    print(
        f"control: {controller} on {scenario.name} with the fleet online in the registry "
        f"from {service.clock.datetime():%Y-%m-%d} midnight",
        flush=True,
    )
    live = LiveControl(service, scenario, make_controller(controller), start_s=start)
    result = await live.run()
    if report is not None:
        summary = write_report(report, scenario, [result])
        print(
            f"control report in {report}: RMSE "
            f"{summary['controllers'][result.controller]['rmse_kw']:.2f} kW",
            flush=True,
        )


async def retention(
    service: EMS, store: Store, keep_days: float | None, raw_days: float | None, every_s: float
) -> None:
    """Apply the retention settings now and then every hour (real time)."""
    while True:
        try:
            done = await asyncio.to_thread(
                store.apply_retention,
                service.clock.now(),
                keep_s=None if keep_days is None else keep_days * 86400.0,
                raw_s=None if raw_days is None else raw_days * 86400.0,
                every_s=every_s,
            )
            if done["deleted"] or done["thinned"]:
                print(
                    f"retention: {done['deleted']} telemetry rows deleted, "
                    f"{done['thinned']} thinned",
                    flush=True,
                )
        except Exception as exc:  # keep the EMS running; try again next hour
            err.print(f"[yellow]retention failed:[/] {exc}")
        await asyncio.sleep(3600.0)
