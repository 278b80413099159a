"""Settings: one frozen dataclass, built from defaults, ``ORDERLOG_*`` variables and flags.

Each field carries its flag, its environment variable and its help text, so the
command line, ``.env.example`` and the table in docs/settings.md are all derived from
this one table.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from orderlog.domain.errors import FieldError, ValidationError
from orderlog.domain.order import CURRENCY_RULE, DEFAULT_CURRENCY, is_currency


def _opt(default: Any, flag: str, help: str, env: str | None = None, shown: str = "") -> Any:
    """A setting: its default, flag and help; ``shown`` is the default as people read it."""
    return field(default=default, metadata={"flag": flag, "help": help, "env": env, "shown": shown})


@dataclass(frozen=True)
class Settings:
    database_url: str = _opt(
        "sqlite:///orderlog.db",
        "--database",
        "database URL: sqlite:///file.db, postgresql://..., mysql://...",
    )
    host: str = _opt("127.0.0.1", "--host", "address to listen on")
    port: int = _opt(8000, "--port", "TCP port to listen on")
    max_in_work: int = _opt(
        1000,
        "--max-in-work",
        "most orders in work at once on this node (claimed, simulated work not yet done); "
        "more wait in the queue, still Pending",
    )
    threads: int = _opt(16, "--threads", "HTTP request threads (waitress)")
    processing_delay: float = _opt(
        0.2, "--processing-delay", "simulated work per order, in seconds"
    )
    connection_limit: int = _opt(2000, "--connection-limit", "open HTTP connections served at once")
    backlog: int = _opt(2048, "--backlog", "listen backlog for connections not yet accepted")
    channel_timeout: int = _opt(
        60, "--channel-timeout", "seconds before an idle HTTP connection is closed"
    )
    header_timeout: float = _opt(
        10.0,
        "--header-timeout",
        "seconds a request's headers may take to arrive, counted from the request's first "
        "byte (from the connection's opening for its first request), however steadily they "
        "trickle in; then the connection is closed",
    )
    max_connections_per_client: int = _opt(
        1200,
        "--max-connections-per-client",
        "most open HTTP connections from one client address; more are closed as they are "
        "accepted (the trusted proxy's own connections are exempt)",
    )
    trusted_proxy: str = _opt(
        "",
        "--trusted-proxy",
        "IP address of the reverse proxy in front (as the connection comes from it): its "
        "X-Forwarded-For and X-Forwarded-Proto are believed, its connections are exempt from "
        "--max-connections-per-client and each client it forwards is held to "
        "--max-requests-per-client; empty: believe no forwarded header",
        shown="none",
    )
    max_requests_per_client: int = _opt(
        8,
        "--max-requests-per-client",
        "most requests from one client forwarded by the trusted proxy that the app works on "
        "at once (of --threads); more are answered 429",
    )
    processes: str = _opt(
        "auto",
        "--processes",
        "processes serving this node from its one listening socket, each a node of its own "
        "whose id is the node id and -1, -2...: a number, or auto (one per two CPUs this "
        "process may run on, at least one: the other half for the database and the "
        "clients); 1 serves from this process alone",
    )
    cpu: str = _opt(
        "auto",
        "--cpu",
        "CPU the server runs on: auto (the least busy allowed CPU at start; with "
        "--processes N, a CPU each when N are allowed, else none), a CPU number, or none "
        "(let threads move between CPUs); one CPU spares the GIL hand-overs between cores",
    )
    max_body_bytes: int = _opt(65536, "--max-body-bytes", "largest accepted request body")
    group_commit: bool = _opt(
        True, "--group-commit", "commit concurrent appends together in one transaction"
    )
    max_batch: int = _opt(1000, "--max-batch", "most appends committed in one transaction")
    sqlite_synchronous: str = _opt(
        "FULL",
        "--sqlite-synchronous",
        "SQLite synchronous level: FULL keeps acknowledged orders through a power loss, "
        "NORMAL only through a process crash (and is faster)",
    )
    node_id: str = _opt(
        "",
        "--node-id",
        "this node's name in claims; one running process per id on a database (a second is "
        "refused)",
        shown="host name and port",
    )
    claim_timeout: float = _opt(
        30.0, "--claim-timeout", "seconds a claim on an order lasts before others may take it"
    )
    pending_grace: float = _opt(
        5.0, "--pending-grace", "seconds before any node picks up another node's Pending order"
    )
    sweep_interval: float = _opt(
        1.0, "--sweep-interval", "seconds between scans of the log for orders to pick up"
    )
    db_timeout: float = _opt(
        5.0,
        "--db-timeout",
        "seconds any one database call may take (connecting, a statement, a lock, a "
        "commit) before it is abandoned and answered 503; also how long a transaction "
        "left idle by a stalled node may hold its locks",
    )
    shutdown_timeout: float = _opt(
        10.0, "--shutdown-timeout", "seconds to finish orders in hand on SIGTERM/SIGINT"
    )
    idempotency_ttl: float = _opt(
        86400.0,
        "--idempotency-ttl",
        "seconds an Idempotency-Key is honoured; a later retry with it is refused, never "
        "a second order",
    )
    default_currency: str = _opt(
        DEFAULT_CURRENCY,
        "--default-currency",
        "ISO 4217 code (three letters A-Z) of an order placed without a currency; it applies "
        "to new orders only: an order stored before orders had a currency is always USD",
    )
    drain_timeout: float = _opt(
        5.0,
        "--drain-timeout",
        "seconds on SIGTERM/SIGINT to answer the requests already received, before the worker "
        "stops; requests still waiting then are answered 503 with Retry-After",
    )
    allow_anonymous: bool = _opt(
        False,
        "--allow-anonymous",
        "serve without API tokens on an address other than loopback (with no token in the "
        "database the API is open to anyone who can reach it)",
    )
    log_level: str = _opt(
        "INFO", "--log-level", "DEBUG, INFO (with a line per request), WARNING or ERROR"
    )
    log_format: str = _opt("text", "--log-format", "text, or json for one JSON object per line")
    # Not a setting: the flag or variable each given value came from, so that an error
    # about it names what the user wrote.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> str:
        """The flag or variable that set field ``name``; its flag when it is the default."""
        return self.sources.get(name) or self.__dataclass_fields__[name].metadata["flag"]

    @property
    def node(self) -> str:
        if self.node_id:
            return self.node_id
        # Host and port name a node across restarts, so it can take back its own claims
        # at once; a server on an ephemeral port has no stable name, so its process id.
        suffix = self.port if self.port else f"pid{os.getpid()}"
        return f"{socket.gethostname()}-{suffix}"

    @property
    def process_count(self) -> int:
        """How many processes serve: ``processes`` as a number, ``auto`` resolved."""
        value = self.processes.strip().lower()
        if value == "auto":
            return auto_processes(allowed_cpu_count())
        return int(value)


def auto_processes(cpus: int) -> int:
    """``--processes auto``: one process per two CPUs, at least one.

    Measured on 2 CPUs with the clients on the same machine (``bench sustained`` and
    ``burst``), two processes were slower than one (0.95x and 0.92x, sustained p99 1 s
    against 0.1 s, SQLite's write lock shared by two): a process per CPU leaves nothing
    for the database and the clients.
    Half is what a machine with more CPUs gets by default; ``--processes N`` overrides.
    """
    return max(1, cpus // 2)


def allowed_cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def env_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("env") or "ORDERLOG_" + f.name.upper()


def settings_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The settings' fields: each has a flag, a variable and help."""
    return tuple(f for f in dataclasses.fields(Settings) if "flag" in f.metadata)


def both_names(name: str) -> str:
    """``--flag or ORDERLOG_VARIABLE`` for field ``name``: for a hint about what to change."""
    f = Settings.__dataclass_fields__[name]
    return f"{f.metadata['flag']} or {env_name(f)}"


def shown_default(f: dataclasses.Field[Any]) -> str:
    """The default as the help, ``.env.example`` and docs/settings.md show it."""
    if f.metadata["shown"]:
        return f.metadata["shown"]
    if isinstance(f.default, bool):
        return "true" if f.default else "false"
    return str(f.default)


def env_example() -> str:
    """The text of ``.env.example``: every variable, commented out at its default."""
    lines = [
        "# orderlog settings. Copy to .env (read by `orderlog serve`); real environment "
        "variables win.",
        "# Every variable is optional: the value shown is the default. Flags: "
        "`orderlog serve --help`.",
    ]
    for f in settings_fields():
        value = "" if f.metadata["shown"] else shown_default(f)
        lines += ["", f"# {f.metadata['help']} ({f.metadata['flag']})"]
        if f.metadata["shown"]:
            lines.append(f"# default: {f.metadata['shown']}")
        lines.append(f"# {env_name(f)}={value}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The table of settings in docs/settings.md."""
    lines = ["| flag | variable | default | meaning |", "| --- | --- | --- | --- |"]
    for f in settings_fields():
        lines.append(
            f"| `{f.metadata['flag']}` | `{env_name(f)}` | `{shown_default(f)}` "
            f"| {f.metadata['help']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m orderlog.config env|table``: ``.env.example``, or docs/settings.md's table."""
    import sys

    (what,) = argv if argv is not None else sys.argv[1:] or ["env"]
    sys.stdout.write(env_example() if what == "env" else markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# What each kind of setting takes, said in words: int()'s "invalid literal for int()
# with base 10" tells a user nothing about the flag.
_EXPECTED = {int: "expected a whole number", float: "expected a number"}

# ORDERLOG_* variables that are not settings: the test suite's, and the container
# entrypoint's token provisioning (deploy/entrypoint.sh).
_NOT_SETTINGS = ("ORDERLOG_TEST_", "ORDERLOG_TOKEN_")


def _convert(f: dataclasses.Field[Any], raw: Any) -> Any:
    kind = type(f.default)
    if isinstance(raw, kind):
        return _finite(raw)
    text = str(raw).strip()
    if kind is bool:
        if text.lower() in {"1", "true", "yes", "on"}:
            return True
        if text.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError("expected true or false")
    try:
        return _finite(kind(text))
    except ValueError:
        raise ValueError(_EXPECTED.get(kind, f"expected a {kind.__name__}")) from None


def _finite(value: Any) -> Any:
    # float() takes "nan" and "inf": a NaN delay fails every order, an infinite one hangs it.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def load_settings(
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    dotenv: Collection[str] = (),
) -> Settings:
    """Defaults, then ``ORDERLOG_*`` variables, then explicit overrides (flags).

    ``dotenv`` names the variables that were read from ``.env``, so errors say so.
    Raises ValidationError naming each variable or flag that does not parse, and each
    ``ORDERLOG_*`` variable that is no setting (a typo would otherwise go unnoticed).
    """
    env = os.environ if env is None else env

    def named(variable: str) -> str:
        return f"{variable} (in .env)" if variable in dotenv else variable

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # field -> the flag or variable that set it, for errors
    problems = _unknown_variables(env, named)
    for f in settings_fields():
        raw = (overrides or {}).get(f.name)
        source = f.metadata["flag"]
        if raw is None and env_name(f) in env:
            raw, source = env[env_name(f)], named(env_name(f))
        if raw is None:
            continue
        sources[f.name] = source
        try:
            values[f.name] = _convert(f, raw)
        except ValueError as exc:
            problems.append(FieldError(source, f"cannot use {raw!r}: {exc}"))
    if problems:
        raise ValidationError(problems)
    settings = Settings(**values, sources=sources)
    _check(settings)
    return settings


def _unknown_variables(env: Mapping[str, str], named: Callable[[str], str]) -> list[FieldError]:
    """Each ``ORDERLOG_*`` variable that is no setting, with the setting nearest its name."""
    known = {env_name(f) for f in settings_fields()}
    problems = []
    for variable in sorted(env):
        if not variable.startswith("ORDERLOG_") or variable in known:
            continue
        if variable.startswith(_NOT_SETTINGS):
            continue
        nearest = difflib.get_close_matches(variable, known, n=1, cutoff=0.0)
        problems.append(FieldError(named(variable), f"not a setting (did you mean {nearest[0]}?)"))
    return problems


def _check(s: Settings) -> None:
    problems = []

    def bad(name: str, message: str) -> None:
        problems.append(FieldError(s.source(name), message))

    for name in (
        "max_in_work",
        "threads",
        "connection_limit",
        "backlog",
        "channel_timeout",
        "max_connections_per_client",
        "max_requests_per_client",
        "max_body_bytes",
        "max_batch",
    ):
        if getattr(s, name) < 1:
            bad(name, "must be at least 1")
    for name in (
        "processing_delay",
        "claim_timeout",
        "pending_grace",
        "shutdown_timeout",
        "idempotency_ttl",
        "drain_timeout",
    ):
        if getattr(s, name) < 0:
            bad(name, "must not be negative")
    for name in ("sweep_interval", "header_timeout", "db_timeout"):
        if getattr(s, name) <= 0:
            bad(name, "must be positive")
    if s.trusted_proxy:
        try:
            ipaddress.ip_address(s.trusted_proxy)
        except ValueError:
            bad("trusted_proxy", "must be one IP address (or empty: no proxy is trusted)")
    if not 0 <= s.port <= 65535:
        bad("port", "must be between 0 and 65535")
    if s.sqlite_synchronous.upper() not in {"FULL", "NORMAL"}:
        bad("sqlite_synchronous", "must be FULL or NORMAL")
    _check_processes(s, bad)
    if not is_currency(s.default_currency):
        bad("default_currency", CURRENCY_RULE)
    if s.log_format not in {"text", "json"}:
        bad("log_format", "must be text or json")
    if s.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        bad("log_level", "must be DEBUG, INFO, WARNING or ERROR")
    if problems:
        raise ValidationError(problems)


def _check_processes(s: Settings, bad: Callable[[str, str], None]) -> None:
    """--processes and --cpu, each and together (a CPU number pins only one process)."""
    processes = s.processes.strip().lower()
    if processes != "auto" and not (processes.isascii() and processes.isdigit()):
        bad("processes", "must be a positive whole number or auto")
    elif processes != "auto" and int(processes) < 1:
        bad("processes", "must be at least 1 (or auto)")
    elif s.cpu.strip().isdigit() and s.process_count > 1:
        bad(
            "cpu",
            f"a CPU number pins one process, and {s.source('processes')} "
            f"asks for {s.process_count}: use auto (a CPU each) or none",
        )
    if s.cpu.strip().lower() not in {"auto", "none"} and not s.cpu.strip().isdigit():
        bad("cpu", "must be auto, none or a CPU number")
