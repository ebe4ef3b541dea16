"""What every ``lakehouse`` command shares.

- The connection options, the same on every command that talks to a running stack:
  ``--config``, ``--nats-url``, ``--data-dir``, ``--storage`` (:func:`connected` adds them).
- ``--url``: the gateway the verbs for people talk to over HTTP (ingest, sql, search, ...).
- ``--json``: print the command's result as one JSON document on stdout instead of text.
- Errors: one line on stderr and exit status 2 (:func:`fail`; :func:`run` maps the core's
  exceptions, an unreachable NATS included).
- Progress of long work: a rich progress bar on stderr (:func:`progress`).
"""

import asyncio
import functools
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lakehouse.platform.config import Settings, load_settings, merged

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

T = TypeVar("T")

CONNECT_DEADLINE = 5.0
"""Seconds a command keeps trying to reach NATS before it gives up (one line, exit 2)."""

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML config file (default ./lakehouse.toml).", show_default=False
    ),
]
NatsUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        help="NATS server(s) to use (default nats://127.0.0.1:4222).",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="NATS store and file storage (default ./data).", show_default=False
    ),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="file://DIR or s3://BUCKET or s3://BUCKET/PREFIX (default file://DATA_DIR/objects).",
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Gateway base URL (default $LAKEHOUSE_URL, else http://127.0.0.1:3110).",
        show_default=False,
    ),
]
"""The default itself is resolved by :func:`lakehouse.client.http.default_url` (not imported
here: every command would pay for httpx)."""
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout instead of text.")
]

_CONNECTION = {
    "config": ConfigOpt,
    "nats_url": NatsUrlOpt,
    "data_dir": DataDirOpt,
    "storage": StorageOpt,
}


def settings_error(error: Any) -> str:
    """One of pydantic's errors as ``section.field: message``."""
    where = ".".join(str(p) for p in error["loc"])
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


@dataclass
class Connection:
    """The connection options a command was given; :meth:`settings` resolves them."""

    config: Path | None = None
    nats_url: str | None = None
    data_dir: Path | None = None
    storage: str | None = None

    def settings(self, **overrides: Any) -> Settings:
        """Defaults → config file → ``LAKEHOUSE_*`` env → these options → ``overrides``."""
        given: dict[str, Any] = {
            "data_dir": self.data_dir,
            "nats": {"url": self.nats_url} if self.nats_url else None,
            "storage": {"url": self.storage} if self.storage else None,
        }
        given = merged(given, {k: v for k, v in overrides.items() if v is not None})
        try:
            settings = load_settings(self.config, **given)
        except ValidationError as exc:  # one line per problem, without pydantic's decoration
            fail("; ".join(settings_error(e) for e in exc.errors()))
        if settings.nats.user or settings.nats.token or settings.nats.creds_file:
            return settings
        # A data dir of a stack started with --secure: connect as its admin NATS user.
        from lakehouse.ops.secure import client_overrides

        secured = client_overrides(settings.data_dir)
        return load_settings(self.config, **merged(secured, given)) if secured else settings


def connected(fn: Callable[..., T]) -> Callable[..., T]:
    """Give a command the connection options; it receives them as ``conn: Connection``."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "conn"]
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann)
        for name, ann in _CONNECTION.items()
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> T:
        conn = Connection(**{name: kwargs.pop(name) for name in _CONNECTION})
        return fn(conn=conn, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # typer must see the new signature, not fn's
    return wrapper


@asynccontextmanager
async def nats_session(settings: Settings, name: str = "lakehouse-cli") -> AsyncIterator["NATS"]:
    """A NATS connection for one command, closed when it is done."""
    from lakehouse.platform.bus import connect

    nc = await connect(settings, name, deadline=CONNECT_DEADLINE)
    try:
        yield nc
    finally:
        await nc.close()


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def one_line(exc: BaseException) -> str:
    """The message of one of the core's exceptions, as a single line."""
    from lakehouse.platform.errors import LakehouseError

    if isinstance(exc, LakehouseError):
        text = f"{exc.error}: {exc.detail}" if exc.detail is not None else exc.error
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion; the core's errors become one line and exit 2."""
    from lakehouse.platform.errors import LakehouseError

    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except (LakehouseError, OSError, TimeoutError) as exc:
        fail(one_line(exc))


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``advance_to(completed, note)``."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total, note="")

        def advance_to(completed: int, note: str = "") -> None:
            bar.update(task, completed=completed, note=note)

        yield advance_to
