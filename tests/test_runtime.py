"""The worker runtime on a real nats-server: redelivery after kill -9, dead letters,
graceful SIGTERM, burst mode."""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from lakehouse.devtools.servers import NatsServer, eventually
from lakehouse.devtools.stack import Proc
from lakehouse.platform.bus import STREAMS, StreamSpec, provision
from lakehouse.platform.config import Settings
from lakehouse.platform.runtime import Runtime
from schemas import subjects as S
from schemas.messages import DeadLetter
from tests.conftest import unique
from tests.support.probe import ProbeWorker

PROBE = "tests.support.probe:ProbeWorker"


@pytest.fixture
def probe_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    out = tmp_path / "probe"
    out.mkdir()
    env = {
        "PROBE_STREAM": unique("PROBE_"),
        "PROBE_SUBJECT": f"test.{unique()}.work",
        "PROBE_DIR": str(out),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


async def provision_all(url: str, env: dict[str, str]) -> None:
    nc = await nats.connect(url)
    stream = StreamSpec(
        env["PROBE_STREAM"], (env["PROBE_SUBJECT"],), "probe test stream", work_queue=True
    )
    await provision(nc.jetstream(), [*STREAMS, stream])
    await nc.close()


async def publish(url: str, subject: str, *bodies: dict[str, object]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for body in bodies:
        await js.publish(
            subject, json.dumps(body).encode(), headers={"Nats-Msg-Id": str(body["id"])}
        )
    await nc.close()


async def dead_letters(url: str, kind: str = "probe") -> list[DeadLetter]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(S.STREAM_DLQ)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(S.STREAM_DLQ, seq)
        if msg.subject == S.dlq(kind):
            out.append(DeadLetter.model_validate_json(msg.data or b""))
    await nc.close()
    return out


async def consumer_state(url: str, stream: str) -> tuple[int, int]:
    nc = await nats.connect(url)
    info = await nc.jetstream().consumer_info(stream, "probe")
    await nc.close()
    return info.num_pending, info.num_ack_pending


def effects(out: Path) -> list[str]:
    log = out / "effects.log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


async def run_burst(settings: Settings) -> int:
    return await Runtime(settings, ProbeWorker, burst=True).run()


async def test_always_failing_message_is_dead_lettered_after_5_deliveries(
    nats_server: NatsServer, make_settings: Callable[..., Settings], probe_env: dict[str, str]
) -> None:
    settings = make_settings(nats_server)
    await provision_all(nats_server.url, probe_env)
    await publish(
        nats_server.url, probe_env["PROBE_SUBJECT"], {"id": "bad", "fail": "always"}, {"id": "good"}
    )
    assert await run_burst(settings) == 0
    out = Path(probe_env["PROBE_DIR"])
    assert sorted(p.name.rsplit(".", 1)[1] for p in out.glob("bad.started.*")) == list("12345")
    assert [e.split()[0] for e in effects(out)] == ["good"]
    [letter] = await dead_letters(nats_server.url)
    assert letter.deliveries == 5 and not letter.permanent
    assert letter.error == "RuntimeError: probe failure on delivery 5"
    assert letter.subject == probe_env["PROBE_SUBJECT"]
    assert json.loads(base64.b64decode(letter.payload_b64 or "")) == {"id": "bad", "fail": "always"}
    assert letter.headers["Nats-Msg-Id"] == "bad"
    assert await consumer_state(nats_server.url, probe_env["PROBE_STREAM"]) == (0, 0)


async def test_permanent_error_is_dead_lettered_at_once(
    nats_server: NatsServer, make_settings: Callable[..., Settings], probe_env: dict[str, str]
) -> None:
    settings = make_settings(nats_server)
    await provision_all(nats_server.url, probe_env)
    await publish(nats_server.url, probe_env["PROBE_SUBJECT"], {"id": "never", "fail": "permanent"})
    assert await run_burst(settings) == 0
    [letter] = await dead_letters(nats_server.url)
    assert letter.deliveries == 1 and letter.permanent
    assert letter.error == "probe says this can never work"
    assert len(list(Path(probe_env["PROBE_DIR"]).glob("never.started.*"))) == 1


async def test_kill_9_mid_handler_is_redelivered_to_another_replica_once(
    nats_server: NatsServer,
    make_settings: Callable[..., Settings],
    probe_env: dict[str, str],
    spawn: Callable[..., Proc],
) -> None:
    settings = make_settings(nats_server)
    out = Path(probe_env["PROBE_DIR"])
    a = spawn(settings, "worker", PROBE, env=probe_env)
    b = spawn(settings, "worker", PROBE, env=probe_env)
    await eventually(
        lambda: "worker ready" in a.output() and "worker ready" in b.output(), what="workers"
    )
    await publish(nats_server.url, probe_env["PROBE_SUBJECT"], {"id": "m1", "sleep_first": 60})
    started = await eventually(lambda: list(out.glob("m1.started.*.1")), what="first delivery")
    victim_pid = int(started[0].name.split(".")[2])
    victim, survivor = (a, b) if a.pid == victim_pid else (b, a)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # ack_wait is 2 s in tests: the survivor gets delivery 2 and completes it.
    await eventually(lambda: effects(out), timeout=20, what="redelivered message to complete")
    assert effects(out) == [f"m1 {survivor.pid}"]
    assert (out / f"m1.started.{survivor.pid}.2").exists()

    async def settled() -> bool:
        return await consumer_state(nats_server.url, probe_env["PROBE_STREAM"]) == (0, 0)

    await eventually(settled, what="consumer to have nothing pending")
    assert effects(out) == [f"m1 {survivor.pid}"]  # processed exactly once in effect


async def test_sigterm_finishes_in_flight_handler_and_acks(
    nats_server: NatsServer,
    make_settings: Callable[..., Settings],
    probe_env: dict[str, str],
    spawn: Callable[..., Proc],
) -> None:
    settings = make_settings(nats_server)
    out = Path(probe_env["PROBE_DIR"])
    worker = spawn(settings, "worker", PROBE, env=probe_env)
    await eventually(lambda: "worker ready" in worker.output(), what="worker ready")
    await publish(nats_server.url, probe_env["PROBE_SUBJECT"], {"id": "slow", "sleep": 1.5})
    await eventually(lambda: list(out.glob("slow.started.*")), what="handler to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert effects(out) == [f"slow {worker.pid}"]
    assert await consumer_state(nats_server.url, probe_env["PROBE_STREAM"]) == (0, 0)
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    handled = [r for r in lines if r.get("msg") == "handled"]
    assert handled and handled[0]["outcome"] == "acked"
    assert {"subject", "outcome", "duration_ms"} <= set(handled[0])
