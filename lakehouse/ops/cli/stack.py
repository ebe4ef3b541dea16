"""Running the platform: ``up``, ``gateway``, ``worker``, ``provision``."""

from typing import Annotated, Any

import typer

from lakehouse.ops.cli.options import (
    Connection,
    JsonOpt,
    connected,
    emit_json,
    fail,
    nats_session,
    run,
)
from schemas import subjects as S

HttpHostOpt = Annotated[
    str | None, typer.Option("--http-host", help="Gateway bind address (127.0.0.1).")
]
HttpPortOpt = Annotated[int | None, typer.Option("--http-port", help="Gateway port (3110).")]
InsecureOpt = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="Serve a non-loopback address without API keys (everyone is admin).",
    ),
]


def _gateway_settings(
    conn: Connection, host: str | None, port: int | None, insecure: bool, **more: Any
) -> Any:
    """Settings with the gateway options; exits 2 when the gateway would serve a
    non-loopback address without keys."""
    from gateway.auth import refuse_unprotected

    gw = {k: v for k, v in {"host": host, "port": port}.items() if v}
    settings = conn.settings(
        gateway=gw or None, auth={"insecure_no_auth": True} if insecure else None, **more
    )
    problem = refuse_unprotected(settings)
    if problem:
        fail(problem)
    return settings


def _kinds(value: str | None) -> list[str]:
    from schemas.subjects import WORKER_KINDS
    from workers import resolve

    kinds = [k.strip() for k in value.split(",") if k.strip()] if value else list(WORKER_KINDS)
    for kind in kinds:
        try:
            resolve(kind)
        except (KeyError, ImportError, AttributeError, TypeError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--workers") from None
    return kinds


def _replicas(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in values:
        kind, sep, n = item.partition("=")
        if not sep or not n.isdigit():
            raise typer.BadParameter(f"expected kind=N, got {item!r}", param_hint="--replicas")
        out[kind] = int(n)
    return out


@connected
def up(
    conn: Connection,
    http_host: HttpHostOpt = None,
    http_port: HttpPortOpt = None,
    nats_port: Annotated[
        int | None, typer.Option(help="Port of the NATS server it starts (4222).")
    ] = None,
    replicas: Annotated[
        list[str] | None, typer.Option(help="Processes per worker kind, e.g. query=2.")
    ] = None,
    workers: Annotated[
        str | None, typer.Option(help="Comma-separated worker kinds to run (default: all).")
    ] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="API keys, a NATS user per service and TLS; the CA, certificates, an admin "
            "key and passwords are made under DATA_DIR/secrets on first start.",
        ),
    ] = False,
    insecure_no_auth: InsecureOpt = False,
) -> None:
    """Start NATS (unless --nats-url names one), the gateway and one process of each worker
    kind; Ctrl-C stops all."""
    from lakehouse.ops.supervisor import run_supervisor
    from lakehouse.platform.logs import setup_logging
    from workers import resolve

    base = conn.settings()
    kinds = _kinds(workers)
    reps = {**base.supervisor.replicas, **_replicas(replicas or [])}
    unknown = sorted(set(reps) - set(kinds))
    if unknown:
        raise typer.BadParameter(
            f"unknown worker kind(s): {', '.join(unknown)}", param_hint="--replicas"
        )
    secure = secure or base.supervisor.secure
    if secure and conn.nats_url:
        fail("--secure starts its own NATS server (with a user per service); drop --nats-url")
    port = nats_port or base.supervisor.nats_port
    more = {
        "supervisor": {"nats_port": port, "replicas": reps, "secure": secure},
        "nats": {"url": conn.nats_url or f"nats://127.0.0.1:{port}"},
    }
    if secure:  # the keys are made before the gateway starts
        gw = {k: v for k, v in {"host": http_host, "port": http_port}.items() if v}
        settings = conn.settings(gateway=gw or None, **more)
    else:
        settings = _gateway_settings(conn, http_host, http_port, insecure_no_auth, **more)
    setup_logging(settings.log_level, settings.secret_values())
    classes = {kind: resolve(kind) for kind in S.WORKER_KINDS}
    code = run_supervisor(settings, kinds, start_nats=conn.nats_url is None, workers=classes)
    raise typer.Exit(code)


@connected
def gateway(
    conn: Connection,
    http_host: HttpHostOpt = None,
    http_port: HttpPortOpt = None,
    insecure_no_auth: InsecureOpt = False,
) -> None:
    """Run the HTTP gateway (HTTPS when tls.cert_file and tls.key_file are set)."""
    import uvicorn

    from gateway.app import create_app
    from lakehouse.platform.logs import setup_logging

    settings = _gateway_settings(conn, http_host, http_port, insecure_no_auth)
    setup_logging(settings.log_level, settings.secret_values())
    tls = settings.tls  # HTTPS with this process's own certificate, when it has one
    uvicorn.run(
        create_app(settings),
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_config=None,
        timeout_graceful_shutdown=settings.gateway.shutdown_timeout,
        ssl_certfile=str(tls.cert_file) if tls.cert_file else None,
        ssl_keyfile=str(tls.key_file) if tls.key_file else None,
    )


@connected
def worker(
    conn: Connection,
    kind: Annotated[str, typer.Argument(help="Worker kind (or module:Class).")],
    burst: Annotated[bool, typer.Option(help="Drain the queue, then exit.")] = False,
    concurrency: Annotated[int | None, typer.Option(help="Messages handled at once.")] = None,
) -> None:
    """Run one worker process of KIND."""
    from lakehouse.platform.runtime import run_worker
    from workers import resolve

    try:
        cls = resolve(kind)
    except (KeyError, ImportError, AttributeError, TypeError) as exc:
        fail(str(exc).strip("'\""))
    settings = conn.settings()
    if concurrency:
        settings.workers.concurrency[cls.kind] = concurrency
    raise typer.Exit(run_worker(settings, cls, burst=burst))


@connected
def provision(conn: Connection, json_out: JsonOpt = False) -> None:
    """Create or update every JetStream stream (idempotent)."""
    from lakehouse.platform.bus import provision as provision_streams

    settings = conn.settings()

    async def go() -> Any:
        async with nats_session(settings) as nc:
            return await provision_streams(nc.jetstream(), replicas=settings.nats.replicas)

    report = run(go)
    if json_out:
        emit_json(
            {"created": report.created, "updated": report.updated, "unchanged": report.unchanged}
        )
        return
    for label, items in (("created", report.created), ("updated", report.updated)):
        for item in items:
            typer.echo(f"{label}: {item}")
    typer.echo(f"unchanged: {len(report.unchanged)}")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(gateway)
    app.command()(worker)
    app.command()(provision)
