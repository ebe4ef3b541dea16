"""``lakehouse status``: per worker kind its live replicas (with each one's metrics port), the
lag of its durable consumers, and who owns each vector partition.

The same data the metrics export (``lakehouse_consumer_pending``, ``..._ack_pending``,
``lakehouse_vector_partition_*``), read here straight from NATS: the health ping, JetStream
consumer info and the lease bucket, so it answers even when no worker of a kind is running.
"""

from typing import Annotated, Any

import typer

from lakehouse.ops.cli.options import Connection, JsonOpt, connected, emit_json, nats_session, run


async def gather(nc: Any, window: float) -> dict[str, Any]:
    """``{"kinds": {kind: {replicas, instances, consumers}}, "partitions": [...]}``."""
    from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError

    from lakehouse.platform.natsauth import _declared
    from lakehouse.platform.rpc import scatter
    from schemas import subjects as S
    from schemas.messages import HealthReply
    from workers import KINDS, resolve

    js = nc.jetstream()
    kinds: dict[str, dict[str, Any]] = {
        k: {"replicas": 0, "instances": [], "consumers": []} for k in S.WORKER_KINDS
    }
    # Every process answers the ping; what arrives within the window is who is alive.
    answers = await scatter(nc, S.HEALTH_PING, b"", timeout=window, done=lambda _: False)
    for reply in sorted(
        (HealthReply.model_validate_json(a) for a in answers), key=lambda r: r.instance
    ):
        entry = kinds.setdefault(reply.kind, {"replicas": 0, "instances": [], "consumers": []})
        entry["replicas"] += 1
        entry["instances"].append(reply.model_dump(mode="json", exclude={"v", "kind"}))
    for kind, entry in kinds.items():
        if kind not in KINDS:
            continue
        consumers, _ = _declared(resolve(kind))
        for stream, durable in consumers:
            row: dict[str, Any] = {"stream": stream, "consumer": durable}
            try:
                info = await js.consumer_info(stream, durable)
                row |= {"pending": info.num_pending or 0, "ack_pending": info.num_ack_pending or 0}
            except NotFoundError:  # no worker of the kind has ever started
                row |= {"pending": None, "ack_pending": None}
            entry["consumers"].append(row)
    partitions: list[dict[str, Any]] = []
    try:
        kv = await js.key_value(S.KV_LEASES)
        keys = await kv.keys()
    except (BucketNotFoundError, NoKeysError):
        keys = []
    for key in sorted(k for k in keys if not k.startswith("members.")):
        try:
            owner = (await kv.get(key)).value
        except NotFoundError:  # released since the listing
            continue
        index, _, number = key.rpartition(".")
        partitions.append(
            {"index": index, "partition": int(number), "owner": owner.decode() if owner else None}
        )
    return {"kinds": kinds, "partitions": partitions}


@connected
def status(
    conn: Connection,
    window: Annotated[
        float | None,
        typer.Option(help="Seconds to gather health replies (default gateway.health_timeout)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Per worker kind: live replicas and their metrics ports, each durable consumer's pending
    and ack-pending messages (its lag); then the owner of every vector partition."""
    settings = conn.settings()

    async def go() -> dict[str, Any]:
        async with nats_session(settings, "lakehouse-status") as nc:
            return await gather(nc, window or settings.gateway.health_timeout)

    found = run(go)
    if json_out:
        emit_json(found)
        return
    for kind, entry in found["kinds"].items():
        typer.echo(f"{kind}: {entry['replicas']} replica(s)")
        for c in entry["consumers"]:
            lag = (
                "not created yet"
                if c["pending"] is None
                else f"pending {c['pending']}  ack_pending {c['ack_pending']}"
            )
            typer.echo(f"  consumer {c['stream']}/{c['consumer']}  {lag}")
        for i in entry["instances"]:
            port = i.get("metrics_port")
            where = f"metrics :{port}" if port is not None else "no metrics port"
            typer.echo(
                f"  instance {i['instance']}  pid {i['pid']}  {where}  "
                f"in_flight {i['in_flight']}  handled {i['handled']}"
            )
    if found["partitions"]:
        typer.echo("vector partitions:")
        for p in found["partitions"]:
            typer.echo(f"  {p['index']}.{p['partition']}  owner {p['owner']}")


def register(app: typer.Typer) -> None:
    app.command()(status)
