"""``orderlog bench``: burst, sustained, store, rebuild and all, with a table or ``--json``.

This package measures orderlog from outside: it starts its own server (``python -m
api serve --port 0`` in a temporary directory, pinned to one CPU while the load
client runs on another) unless ``--url`` names one, and drives it with api.loadgen.
Its modules may import api, projections and orderlog; nothing imports them except
the CLI. Each sub-bench returns plain figures; this module only parses, places
processes, runs and prints. Nothing happens at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from orderlog.config import Settings

SUBCOMMANDS = ("burst", "sustained", "store", "rebuild", "all")
_DEFAULTS = Settings()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON report, no table")
    common.add_argument("--url", help="measure a running server (http://HOST:PORT) instead")
    common.add_argument(
        "--database",
        help="database URL for the servers and stores this bench makes "
        "(default: a SQLite file in a temporary directory)",
    )
    common.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server and the load generator to separate CPUs",
    )
    common.add_argument("--threads", type=int, default=_DEFAULTS.threads, help="waitress threads")
    common.add_argument(
        "--connection-limit", type=int, default=_DEFAULTS.connection_limit, help="waitress limit"
    )
    common.add_argument("--backlog", type=int, default=_DEFAULTS.backlog, help="listen backlog")
    common.add_argument(
        "--no-wrk", dest="wrk", action="store_false", help="skip the wrk cross-check of the client"
    )

    parser = argparse.ArgumentParser(prog="orderlog bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    burst = commands.add_parser("burst", parents=[common], help="N orders at once, then settle")
    _burst_options(burst, orders=1000)
    sustained = commands.add_parser("sustained", parents=[common], help="keep-alive load vs bare")
    _sustained_options(sustained, duration=10.0)
    store = commands.add_parser("store", parents=[common], help="EventStore.append vs raw inserts")
    _store_options(store, appends=20000)
    rebuild = commands.add_parser("rebuild", parents=[common], help="replay a big log vs raw scan")
    _rebuild_options(rebuild, events=1_000_000)
    every = commands.add_parser("all", parents=[common], help="all of them, modest sizes")
    _burst_options(every, orders=1000)
    _sustained_options(every, duration=5.0)
    _store_options(every, appends=5000)
    _rebuild_options(every, events=200_000)
    return parser


def _burst_options(parser: argparse.ArgumentParser, orders: int) -> None:
    parser.add_argument("--orders", type=int, default=orders, help="orders in the burst")
    parser.add_argument(
        "--burst-connections", type=int, default=None, help="sockets (default: one per order)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument(
        "--settle-timeout", type=float, default=60.0, help="most seconds to wait for Completed"
    )


def _sustained_options(parser: argparse.ArgumentParser, duration: float) -> None:
    parser.add_argument("--connections", type=int, default=100, help="keep-alive sockets")
    parser.add_argument("--duration", type=float, default=duration, help="seconds of load")


def _store_options(parser: argparse.ArgumentParser, appends: int) -> None:
    parser.add_argument("--appends", type=int, default=appends, help="appends per measurement")
    parser.add_argument(
        "--store-threads", default="1,8", help="comma-separated thread counts (default 1,8)"
    )


def _rebuild_options(parser: argparse.ArgumentParser, events: int) -> None:
    parser.add_argument("--events", type=int, default=events, help="events in the big log")
    parser.add_argument(
        "--small-events", type=int, default=1000, help="events in the small log (latency baseline)"
    )
    parser.add_argument("--samples", type=int, default=200, help="requests per latency median")


class Bench:
    """What every sub-bench shares: the arguments, the scratch directory and the placement."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        from api.bench.placement import place
        from api.bench.servers import WaitressOptions

        self.args = args
        self.workdir = workdir
        self.placement = place(args.pin)
        self.options = WaitressOptions(args.threads, args.connection_limit, args.backlog)
        self.database_url: str = args.database or f"sqlite:///{workdir / 'bench.db'}"

    @contextlib.contextmanager
    def orderlog_server(self) -> Iterator[Any]:
        """The server under test: the one at --url, or a fresh one we start and stop."""
        from api.bench.servers import server_from_url, start_orderlog

        if self.args.url:
            yield server_from_url(self.args.url)
            return
        server = start_orderlog(self.database_url, self.workdir, self.placement, self.options)
        try:
            yield server
        finally:
            server.stop()

    def burst(self) -> dict[str, Any]:
        from api.bench.load import run_burst

        connections = self.args.burst_connections or self.args.orders
        with self.orderlog_server() as server:
            return run_burst(
                server, self.args.orders, connections, self.args.timeout, self.args.settle_timeout
            )

    def sustained(self) -> dict[str, Any]:
        from api.bench.load import measure_bare, run_sustained, wrk_rate
        from api.bench.servers import start_bare

        args = self.args

        def wrk(server: Any) -> float | None:
            return wrk_rate(server, args.connections, args.duration, self.placement, self.workdir)

        # The bare server runs first and alone: a live orderlog server would still be
        # completing its backlog on the same CPU and slow the baseline down.
        bare = start_bare(self.workdir, self.placement, self.options)
        try:
            baseline = measure_bare(
                bare, args.connections, args.duration, wrk if args.wrk else None
            )
        finally:
            bare.stop()
        with self.orderlog_server() as server:
            return run_sustained(server, baseline, args.connections, args.duration)

    def store(self) -> dict[str, Any]:
        from api.bench.store import run_store

        threads = [int(n) for n in self.args.store_threads.split(",") if n.strip()]
        # In-process: the appending threads are the "server" side, so they get its CPU.
        self.placement.run_here_as_server()
        try:
            return run_store(self.database_url, self.workdir, self.args.appends, threads)
        finally:
            self.placement.run_here_as_client()

    def rebuild(self) -> dict[str, Any]:
        from api.bench.rebuild import run_rebuild
        from orderlog.database import backend_of

        if backend_of(self.database_url) != "sqlite":
            return {"skipped": "rebuild generates its log and baseline with sqlite3: SQLite only"}
        args = self.args
        return run_rebuild(
            self.workdir, self.placement, self.options, args.events, args.small_events, args.samples
        )


def main(argv: list[str] | None = None) -> int:
    """Run one sub-bench (or all) and print its report; 0 unless the bench itself failed."""
    args = build_parser().parse_args(argv)
    names = ["store", "rebuild", "burst", "sustained"] if args.command == "all" else [args.command]
    from orderlog.database import redact

    workdir = Path(tempfile.mkdtemp(prefix="orderlog-bench-"))
    bench = Bench(args, workdir)
    out: dict[str, Any] = {
        "command": args.command,
        "placement": bench.placement.as_dict(),
        "target": args.url or "server started by the bench",
        "database": redact(bench.database_url),
        "results": {},
    }
    if not args.json:
        _say(f"orderlog bench {args.command}: {out['placement']['description']}")
        _say(f"database {out['database']}; server: {out['target']}")
    try:
        for name in names:
            run: Callable[[], dict[str, Any]] = getattr(bench, name)
            report = run()
            out["results"][name] = report
            if not args.json:
                from api.bench.report import render

                _say(render(name, report) if "skipped" not in report else f"{name}: skipped, "
                     f"{report['skipped']}")  # fmt: skip
    finally:
        bench.placement.restore()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        for report in out["results"].values():
            report.pop("table", None)
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
