"""Gateway API keys: roles, scopes, the key file, web sessions.

A key is ``lh_<id>_<secret>``: ``id`` (8 hex characters) names the key in logs, the key file
and ``lakehouse keys list``; ``secret`` (32 random bytes) is known only to its holder. The key
file keeps, per key, its id, role, scopes, label, creation time and the SHA-256 of the secret
(a 256-bit random secret needs no slow hash: nothing can be guessed from it). Checks compare
digests in constant time. The file is JSON, mode 0600, rewritten atomically; a gateway
re-reads it when it changes (a key created or revoked takes effect within a second, no
restart).

Roles nest: ``reader`` (SQL, search, list and get) < ``writer`` (+ ingest, vector items,
storage writes, compaction) < ``admin`` (+ deleting datasets and indexes). Scopes are glob
patterns over dataset and index names (``workers*``); a key with scopes reaches only those
names, and is refused what names no dataset (listing all storage, registering by body).

A web login is a cookie ``<id>.<expires>.<mac>``: an HMAC (the file's own session secret)
over the id, the expiry and the key's digest, so revoking the key ends its sessions.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

PREFIX = "lh_"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Bind addresses only this machine reaches."""
RELOAD_EVERY = 1.0
"""Seconds between checks of the key file for changes."""


class Role(StrEnum):
    reader = "reader"
    writer = "writer"
    admin = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def covers(self, needed: Role) -> bool:
        return self.rank >= needed.rank


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    role: Role
    sha256: str
    scopes: tuple[str, ...] = ()
    label: str = ""
    created: str = ""

    def sees(self, name: str) -> bool:
        """Whether this key reaches dataset or index ``name`` (no scopes: every name)."""
        return not self.scopes or any(fnmatch.fnmatchcase(name, p) for p in self.scopes)

    @property
    def scoped(self) -> bool:
        return bool(self.scopes)

    def public(self) -> dict[str, object]:
        """What may be shown (never the digest)."""
        return {
            "id": self.id,
            "role": self.role.value,
            "scopes": list(self.scopes),
            "label": self.label,
            "created": self.created,
        }


ANONYMOUS = ApiKey(id="anonymous", role=Role.admin, sha256="")
"""Who a request is when the gateway runs without keys (loopback, or --insecure-no-auth)."""


def split(presented: str) -> tuple[str, str] | None:
    """``lh_<id>_<secret>`` -> (id, secret); None when it is not shaped like a key."""
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, secret = presented[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != 8 or not secret:
        return None
    return key_id, secret


@dataclass
class KeyStore:
    """The key file of one gateway (or of ``lakehouse keys``)."""

    path: Path
    _keys: dict[str, ApiKey] = field(default_factory=dict)
    _session_secret: bytes = b""
    _stamp: tuple[float, int] | None = None
    _checked: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- reading ------------------------------------------------------------------------

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < RELOAD_EVERY:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._keys, self._session_secret, self._stamp = {}, b"", None
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        doc = json.loads(self.path.read_text())
        self._keys = {
            k["id"]: ApiKey(
                id=k["id"],
                role=Role(k["role"]),
                sha256=k["sha256"],
                scopes=tuple(k.get("scopes", ())),
                label=k.get("label", ""),
                created=k.get("created", ""),
            )
            for k in doc.get("keys", [])
        }
        self._session_secret = bytes.fromhex(doc.get("session_secret", ""))
        self._stamp = stamp

    @property
    def configured(self) -> bool:
        """Whether any key exists (no keys on a loopback bind: no authentication)."""
        self._refresh()
        return bool(self._keys)

    def keys(self) -> list[ApiKey]:
        self._refresh()
        return sorted(self._keys.values(), key=lambda k: k.created)

    def verify(self, presented: str) -> ApiKey | None:
        """The key ``presented`` is, or None; the comparison takes the same time for a wrong
        secret and an unknown id."""
        self._refresh()
        parts = split(presented.strip())
        key_id, secret = parts if parts else ("", presented)
        key = self._keys.get(key_id)
        expected = key.sha256 if key else digest("not a key")
        ok = hmac.compare_digest(digest(secret), expected)
        return key if ok and key is not None else None

    # ---- sessions (web login) -----------------------------------------------------------

    def _mac(self, key: ApiKey, expires: int) -> str:
        msg = f"{key.id}.{expires}.{key.sha256}".encode()
        return hmac.new(self._session_secret, msg, hashlib.sha256).hexdigest()

    def session(self, key: ApiKey, ttl: float) -> str:
        self._refresh()
        expires = int(time.time() + ttl)
        return f"{key.id}.{expires}.{self._mac(key, expires)}"

    def from_session(self, cookie: str) -> ApiKey | None:
        self._refresh()
        key_id, _, rest = cookie.partition(".")
        expires_s, _, mac = rest.partition(".")
        key = self._keys.get(key_id)
        if key is None or not expires_s.isdigit() or int(expires_s) < time.time():
            return None
        return key if hmac.compare_digest(mac, self._mac(key, int(expires_s))) else None

    # ---- writing (``lakehouse keys``, ``up --secure``) ------------------------------------

    def create(
        self, role: Role, scopes: tuple[str, ...] = (), label: str = ""
    ) -> tuple[str, ApiKey]:
        """A new key: returns the key itself (shown once, stored nowhere) and its record."""
        with self._lock:
            self._stamp = None
            self._refresh()
            key_id = secrets.token_hex(4)
            while key_id in self._keys:
                key_id = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)
            created = datetime.now(UTC).isoformat(timespec="seconds")
            record = ApiKey(key_id, role, digest(secret), tuple(scopes), label, created)
            self._write({**self._keys, key_id: record})
            return f"{PREFIX}{key_id}_{secret}", record

    def revoke(self, key_id: str) -> ApiKey | None:
        with self._lock:
            self._stamp = None
            self._refresh()
            keys = dict(self._keys)
            gone = keys.pop(key_id, None)
            if gone is not None:
                self._write(keys)
            return gone

    def _write(self, keys: dict[str, ApiKey]) -> None:
        secret = self._session_secret or secrets.token_bytes(32)
        doc = {
            "session_secret": secret.hex(),
            "keys": [
                {**asdict(k), "role": k.role.value, "scopes": list(k.scopes)}
                for k in sorted(keys.values(), key=lambda k: k.created)
            ],
        }
        write_secret_file(self.path, json.dumps(doc, indent=2))
        self._stamp = None
        self._refresh()


def write_secret_file(path: Path, data: str | bytes) -> None:
    """``data`` into ``path`` atomically (a reader sees the old file or the new one), mode
    0600 whatever the umask; a directory it creates is 0700. The one way a key, a password
    or a secrets file is written."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o600)  # in case it existed with other bits
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
