"""Settings precedence (defaults -> lakehouse.toml -> LAKEHOUSE_* env -> CLI flags),
secret handling, and log redaction."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lakehouse.platform.config import child_env, load_settings, redact_url
from lakehouse.platform.logs import JsonFormatter


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("LAKEHOUSE_"):
            monkeypatch.delenv(key)
    toml = tmp_path / "lakehouse.toml"
    assert load_settings(toml).gateway.port == 3110  # default, no file
    toml.write_text('[gateway]\nport = 4000\nhost = "0.0.0.0"\n[workers]\nmax_deliver = 7\n')
    s = load_settings(toml)
    assert (s.gateway.port, s.gateway.host, s.workers.max_deliver) == (4000, "0.0.0.0", 7)
    monkeypatch.setenv("LAKEHOUSE_GATEWAY__PORT", "5000")
    s = load_settings(toml)
    assert (s.gateway.port, s.gateway.host) == (5000, "0.0.0.0")  # env wins, file still merges
    s = load_settings(toml, gateway={"port": 6000})
    assert (s.gateway.port, s.gateway.host) == (6000, "0.0.0.0")  # CLI flag wins
    monkeypatch.setenv("LAKEHOUSE_CONFIG", str(toml))
    assert load_settings().workers.max_deliver == 7


def test_storage_url_defaults_under_data_dir(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "none.toml", data_dir=tmp_path / "d")
    assert s.storage_url == f"file://{tmp_path}/d/objects"


def test_secrets_are_secretstr_and_survive_child_env(tmp_path: Path) -> None:
    s = load_settings(
        tmp_path / "none.toml",
        nats={"password": "pw-123", "url": "nats://u:urlpw@h:4222"},
        storage={"s3_secret_key": "sk-456"},
    )
    assert "pw-123" not in repr(s) and "sk-456" not in repr(s)
    assert set(s.secret_values()) == {"pw-123", "sk-456", "urlpw"}
    env = child_env(s)
    assert env["LAKEHOUSE_NATS__PASSWORD"] == "pw-123"
    assert env["LAKEHOUSE_STORAGE__S3_SECRET_KEY"] == "sk-456"


def test_redact_url() -> None:
    assert redact_url("nats://u:p@h:1,nats://h2:2") == "nats://u:***@h:1,nats://h2:2"
    assert redact_url("nats://tok@h:1") == "nats://***@h:1"
    assert redact_url("nats://h:1") == "nats://h:1"


def test_json_log_redacts_planted_secret() -> None:
    fmt = JsonFormatter(["planted-s3cret"])
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops %s", ("planted-s3cret",), None)
    rec.subject = "lakehouse.x"
    line = fmt.format(rec)
    assert "planted-s3cret" not in line
    assert json.loads(line)["msg"] == "oops ***"
    assert json.loads(line)["subject"] == "lakehouse.x"


def test_file_storage_across_hosts_is_refused_unless_shared(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pydantic import ValidationError

    three = "nats://h1:4222,nats://h2:4222,nats://h3:4222"
    with pytest.raises(ValidationError, match=r"nats\.url names 3 servers"):
        load_settings(tmp_path / "none.toml", data_dir=tmp_path, nats={"url": three})
    shared = load_settings(
        tmp_path / "none.toml", data_dir=tmp_path, nats={"url": three}, storage={"shared": True}
    )
    assert shared.storage_url.startswith("file://")
    s3 = load_settings(tmp_path / "none.toml", nats={"url": three}, storage={"url": "s3://b"})
    assert s3.storage_url == "s3://b"
    assert load_settings(tmp_path / "none.toml", data_dir=tmp_path).nats.url.count(",") == 0
    # A worker started that way exits 2 with one line saying what to do.
    out = subprocess.run(
        [sys.executable, "-m", "lakehouse", "worker", "ingest", "--nats-url", three,
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: storage file://") and "storage.shared" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
