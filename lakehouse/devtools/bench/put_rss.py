"""Gateway RSS while a large PUT /v1/storage streams through it.

    python -m lakehouse.devtools.bench.put_rss [--gib 2] [--backend file|s3]

Starts a real gateway process (file backend under a temp dir, or a SeaweedFS S3 server),
streams N GiB from a generator with chunked transfer encoding, samples the gateway's RSS
every 50 ms, and prints baseline, peak and growth. The target: growth <= ~64 MiB.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from lakehouse.devtools.bench.rss import PeakRss
from lakehouse.devtools.stack import Proc, project_env, serving
from lakehouse.platform.config import load_settings
from lakehouse.platform.procs import free_port

MiB = 1 << 20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--backend", choices=["file", "s3"], default="file")
    args = ap.parse_args()
    total = int(args.gib * (1 << 30))
    with tempfile.TemporaryDirectory() as tmp:
        seaweed = None
        storage: dict[str, object] | None = None
        if args.backend == "s3":
            from lakehouse.devtools.servers import SeaweedS3

            seaweed = SeaweedS3(Path(tmp) / "s3").start()
            storage = seaweed.storage("bench-put")
        port = free_port()
        settings = load_settings(
            Path(tmp) / "none.toml",
            data_dir=Path(tmp) / "data",
            storage=storage,
            gateway={"port": port, "max_put_bytes": total + MiB},
            nats={"url": f"nats://127.0.0.1:{free_port()}"},
        )
        gw = Proc(["gateway"], project_env(settings), Path(tmp) / "gateway.log")
        try:
            base = serving(gw, settings)
            rss = PeakRss([gw.pid], every=0.05)
            baseline = rss.current()
            chunk = os.urandom(256 * 1024)

            def body() -> Iterator[bytes]:
                sent = 0
                while sent < total:
                    n = min(len(chunk), total - sent)
                    sent += n
                    yield chunk[:n]

            with rss:
                started = time.monotonic()
                r = httpx.put(f"{base}/v1/storage/bench/big.bin", content=body(), timeout=600)
                elapsed = time.monotonic() - started
            peak = rss.peak
            r.raise_for_status()
            assert r.json()["size"] == total, r.text
            print(
                f"backend={args.backend} size={total / (1 << 30):.2f} GiB "
                f"time={elapsed:.1f}s ({total / MiB / elapsed:.0f} MiB/s) "
                f"gateway RSS baseline={baseline / MiB:.1f} MiB peak={peak / MiB:.1f} MiB "
                f"growth={(peak - baseline) / MiB:.1f} MiB"
            )
        finally:
            gw.stop()
            if seaweed:
                seaweed.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
