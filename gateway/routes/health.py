"""``GET /health``: the gateway, NATS, and the live replicas of every worker kind."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from nats.aio.msg import Msg
from pydantic import BaseModel, Field, ValidationError

from gateway import auth, errors
from gateway.routes import JsonRoute, state
from lakehouse import __version__
from lakehouse.platform.config import redact_url
from schemas import subjects as S
from schemas.messages import HealthReply

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(tags=["health"], route_class=JsonRoute)


class GatewayInfo(BaseModel):
    status: Literal["ok"] = Field(description="The gateway answers.")
    version: str = Field(description="Lakehouse version.", examples=["0.1.0"])
    pid: int = Field(description="Gateway process id.")
    started_at: datetime = Field(description="When the gateway started (UTC).")
    storage: str = Field(description="Storage URL.", examples=["file:///srv/data/objects"])
    auth: str = Field(
        description="How callers are authenticated: `api keys`, `none (loopback only)` or "
        "`none (--insecure-no-auth)`.",
        examples=["api keys"],
    )
    tls: bool = Field(description="Whether the gateway serves HTTPS.")


class NatsInfo(BaseModel):
    connected: bool = Field(description="Whether the gateway is connected to NATS.")
    url: str = Field(description="NATS URL, credentials redacted.")


class WorkerKindHealth(BaseModel):
    replicas: int = Field(description="Live replicas that answered the ping.", examples=[1])
    instances: list[dict[str, Any]] = Field(
        description="Each replica's health reply; `details` holds facts particular to the kind "
        "(an embed worker's provider, model, device — cuda or cpu —, max_tokens and threads)."
    )


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="ok: every worker kind has a live replica; degraded: some kind has none."
    )
    gateway: GatewayInfo
    nats: NatsInfo
    workers: dict[str, WorkerKindHealth] = Field(description="By worker kind.")


class Unhealthy(BaseModel):
    status: Literal["unavailable"]
    error: str = Field(examples=["NATS unreachable"])
    detail: str
    gateway: GatewayInfo
    nats: NatsInfo


EXAMPLE = {
    "status": "ok",
    "gateway": {
        "status": "ok",
        "version": "0.1.0",
        "pid": 4100,
        "started_at": "2026-01-01T00:00:00+00:00",
        "storage": "file:///srv/lakehouse/data/objects",
        "auth": "none (loopback only)",
        "tls": False,
    },
    "nats": {"connected": True, "url": "nats://127.0.0.1:4222"},
    "workers": {
        "ingest": {"replicas": 1, "instances": []},
        "embed": {
            "replicas": 1,
            "instances": [
                {
                    "instance": "embed-4121-a1b2c3",
                    "pid": 4121,
                    "started_at": "2026-01-01T00:00:01+00:00",
                    "in_flight": 0,
                    "handled": 42,
                    "metrics_port": 40123,
                    "details": {
                        "provider": "local",
                        "model": "all-MiniLM-L6-v2",
                        "device": "cuda",
                        "max_tokens": 256,
                        "threads": 16,
                    },
                }
            ],
        },
    },
}


async def gather_replies(st: State, window: float) -> list[HealthReply]:
    """Ping every live process and collect what answers within ``window`` seconds."""
    assert st.nc is not None
    replies: list[HealthReply] = []

    async def on_reply(msg: Msg) -> None:
        try:
            replies.append(HealthReply.model_validate_json(msg.data))
        except ValidationError:
            pass

    inbox = st.nc.new_inbox()
    sub = await st.nc.subscribe(inbox, cb=on_reply)
    try:
        await st.nc.publish(S.HEALTH_PING, b"", reply=inbox)
        await st.nc.flush()
        await asyncio.sleep(window)  # a gather window: replicas answer within it or not at all
    finally:
        await sub.unsubscribe()
    return replies


@router.get(
    "/health",
    summary="Gateway, NATS and worker replica health",
    responses={
        200: {
            "model": Health,
            "description": "Gateway, NATS and worker replicas.",
            "content": {"application/json": {"example": EXAMPLE}},
        },
        503: {
            "model": Unhealthy,
            "description": "NATS is unreachable (an error body with the gateway's own health).",
            "headers": errors.RETRY_AFTER_HEADER,
        },
        500: errors.responses()[500],
    },
)
async def health(st: State = Depends(state)) -> JSONResponse:
    gateway = {
        "status": "ok",
        "version": __version__,
        "pid": os.getpid(),
        "started_at": st.started_at.isoformat(),
        "storage": st.storage.url,
        "auth": auth.mode(st.settings, st.keys),
        "tls": st.settings.tls.cert_file is not None,
    }
    nats_info: dict[str, Any] = {
        "connected": st.nats_connected,
        "url": redact_url(st.settings.nats.url),
    }
    if not st.nats_connected:
        body = {
            "status": "unavailable",
            "error": "NATS unreachable",
            "detail": f"the gateway cannot reach NATS at {nats_info['url']}; "
            "workers cannot be asked for their health",
            "gateway": gateway,
            "nats": nats_info,
        }
        return JSONResponse(body, 503, headers={"Retry-After": str(errors.RETRY_AFTER)})
    replies = await gather_replies(st, st.settings.gateway.health_timeout)
    workers: dict[str, dict[str, Any]] = {
        k: {"replicas": 0, "instances": []} for k in S.WORKER_KINDS
    }
    for r in sorted(replies, key=lambda r: r.instance):
        entry = workers.setdefault(r.kind, {"replicas": 0, "instances": []})
        entry["replicas"] += 1
        entry["instances"].append(r.model_dump(mode="json", exclude={"v", "kind"}))
    ok = all(w["replicas"] > 0 for k, w in workers.items() if k in S.WORKER_KINDS)
    body = {
        "status": "ok" if ok else "degraded",
        "gateway": gateway,
        "nats": nats_info,
        "workers": workers,
    }
    return JSONResponse(body, 200)
