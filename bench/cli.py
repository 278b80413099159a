"""``python -m bench``: burst, sustained, store, rebuild, attack, wrk, all; a table or ``--json``.

It measures orderlog from outside, as a user runs it: the server is started as
``orderlog serve`` with its default settings on a fresh database (or ``--url``
names a running one) and nothing is pinned to a CPU unless ``--placement`` asks
for it. Each sub-bench returns plain figures; this module only parses, places
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

from bench.placement import Placement, place

SUBCOMMANDS = ("burst", "sustained", "store", "rebuild", "attack", "wrk", "all")
CORE_MAX_ORDERS = 30_000  # bench.core's orders at most, whatever the served run accepted
PLACEMENTS = {"unpinned": [False], "pinned": [True], "both": [False, True]}


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
        "--placement",
        choices=sorted(PLACEMENTS),
        default="unpinned",
        help="unpinned (as users run it, the default), pinned (the server on one CPU, "
        "the load client on the others) or both, unpinned first",
    )
    common.add_argument(
        "--server-flag",
        dest="server_flags",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra flag for orderlog serve, e.g. --server-flag=--threads=8 "
        "(a tuned variant: the default run passes none)",
    )
    common.add_argument(
        "--no-wrk", dest="wrk", action="store_false", help="skip the wrk cross-check of the client"
    )
    common.add_argument(
        "--auth",
        action="store_true",
        help="with API tokens on: a token is made before the server starts and every "
        "request carries it (the bare app is measured as always)",
    )

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    burst = commands.add_parser("burst", parents=[common], help="N orders at once, then settle")
    _burst_options(burst, orders=1000)
    _server_processes_option(burst)
    sustained = commands.add_parser("sustained", parents=[common], help="keep-alive load vs bare")
    _sustained_options(sustained, duration=10.0)
    _server_processes_option(sustained)
    store = commands.add_parser("store", parents=[common], help="EventStore.append vs raw inserts")
    _store_options(store, appends=20000)
    _store_processes_options(store)
    rebuild = commands.add_parser("rebuild", parents=[common], help="replay a big log vs raw scan")
    _rebuild_options(rebuild, events=1_000_000)
    attack = commands.add_parser(
        "attack", parents=[common], help="a normal client's latency while another hoards sockets"
    )
    _attack_options(attack, duration=15.0)
    wrk = commands.add_parser(
        "wrk", parents=[common], help="wrk posting new orders, orderlog vs bare, 1..N processes"
    )
    _wrk_options(wrk)
    every = commands.add_parser("all", parents=[common], help="all but wrk, modest sizes")
    _burst_options(every, orders=1000)
    _sustained_options(every, duration=5.0)
    _store_options(every, appends=5000)
    _rebuild_options(every, events=200_000)
    _attack_options(every, duration=5.0)
    return parser


def _burst_options(parser: argparse.ArgumentParser, orders: int) -> None:
    parser.add_argument("--orders", type=int, default=orders, help="orders in the burst")
    parser.add_argument(
        "--burst-connections", type=int, default=None, help="sockets (default: one per order)"
    )
    parser.add_argument(
        "--few-connections",
        type=int,
        default=10,
        help="the same orders over this many sockets, to show throughput holds with "
        "concurrency (0: skip)",
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


def _store_processes_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes",
        dest="store_processes",
        type=_counts,
        default=None,
        metavar="K,K,...",
        help="writer processes at once, each a node's own EventStore, against as many raw "
        "driver processes (e.g. 1,4); without it: --appends through one store from "
        "--store-threads threads",
    )
    parser.add_argument(
        "--seconds",
        type=_positive(float),
        default=4.0,
        help="with --processes: seconds each writes",
    )
    parser.add_argument(
        "--threads",
        type=_positive(int),
        default=8,
        help="with --processes: appending threads per process",
    )
    parser.add_argument(
        "--runs", type=_positive(int), default=2, help="with --processes: runs of each (medians)"
    )


def _server_processes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="orderlog serve --processes N, and the bare app from N processes (default: "
        "neither is asked, both serve from one process)",
    )


def _wrk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes",
        dest="wrk_processes",
        type=_counts,
        default=[1, 2],
        metavar="N,N,...",
        help="server processes to measure, each for orderlog and the bare app (default 1,2)",
    )
    count = _positive(int)
    parser.add_argument("--connections", type=count, default=100, help="keep-alive connections")
    parser.add_argument("--seconds", type=count, default=10, help="seconds of load per measurement")
    parser.add_argument("--runs", type=count, default=3, help="runs of each (medians)")
    parser.add_argument("--wrk-threads", type=count, default=1, help="wrk's threads")
    parser.add_argument(
        "--wrk-timeout",
        type=count,
        default=10,
        help="seconds before wrk counts a request timed out",
    )


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``kind`` of the text, and more than 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"want more than 0: {text!r}")
        return value

    return parse


def _counts(text: str) -> list[int]:
    """``1,4`` -> [1, 4]: distinct positive counts, in the order given."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"want distinct counts of at least 1: {text!r}")
    return counts


def _rebuild_options(parser: argparse.ArgumentParser, events: int) -> None:
    parser.add_argument("--events", type=int, default=events, help="events in the big log")
    parser.add_argument(
        "--small-events", type=int, default=1000, help="events in the small log (latency baseline)"
    )
    parser.add_argument("--samples", type=int, default=200, help="requests per latency median")


def _attack_options(parser: argparse.ArgumentParser, duration: float) -> None:
    parser.add_argument(
        "--attack-connections", type=int, default=2500, help="connections the attacker holds"
    )
    parser.add_argument(
        "--attack-source",
        dest="attack_sources",
        action="append",
        default=None,
        metavar="ADDRESS",
        help="local address the attacker connects from (repeat for several; default 127.0.0.2)",
    )
    parser.add_argument(
        "--attack-kind",
        dest="attack_kinds",
        action="append",
        default=None,
        choices=("idle", "slow", "keep-alive"),
        help="how connections are held, in turn (repeat; default: idle and slow)",
    )
    parser.add_argument(
        "--trickle-every", type=float, default=5.0, help="seconds between a slow client's bytes"
    )
    parser.add_argument(
        "--attack-duration", type=float, default=duration, help="seconds of probing per phase"
    )
    parser.add_argument(
        "--probe-timeout", type=float, default=10.0, help="seconds a probe waits for its answer"
    )
    parser.add_argument("--probe-clients", type=int, default=2, help="concurrent probing clients")


class Bench:
    """What every sub-bench shares: the arguments, the scratch directory and the placement."""

    def __init__(self, args: argparse.Namespace, workdir: Path, placement: Placement) -> None:
        self.args = args
        self.workdir = workdir
        self.placement = placement
        self.database_url: str = args.database or f"sqlite:///{workdir / 'bench.db'}"
        self.server_flags: tuple[str, ...] = tuple(args.server_flags)
        # burst and sustained: orderlog serve --processes N and the bare app with N.
        self.processes: int | None = getattr(args, "processes", None)

    @contextlib.contextmanager
    def orderlog_server(self, processes: int | None = None) -> Iterator[Any]:
        """The server under test: the one at --url, or a fresh one on a fresh database
        (with ``--processes N`` when ``processes`` is given)."""
        from bench.servers import make_token, scratch_database, server_from_url, start_orderlog

        if self.args.url:
            yield server_from_url(self.args.url)
            return
        with scratch_database(self.database_url, self.workdir, "serve") as url:
            secret = make_token(url, self.workdir) if self.args.auth else None
            server = start_orderlog(
                url, self.workdir, self.placement, *self.server_flags, processes=processes
            )
            if secret:
                server.headers = {"Authorization": f"Bearer {secret}"}
            try:
                yield server
            finally:
                server.stop()

    def burst(self) -> dict[str, Any]:
        from bench.load import measure_bare_burst, run_burst
        from bench.servers import start_bare

        args = self.args
        connections = args.burst_connections or args.orders
        self._check_processes()
        bare = start_bare(self.workdir, self.placement, processes=self.processes)
        try:
            baseline = measure_bare_burst(bare, args.orders, connections, args.timeout)
        finally:
            bare.stop()
        few = None
        if args.few_connections:
            with self.orderlog_server(self.processes) as server:
                few = run_burst(
                    server, args.orders, args.few_connections, args.timeout, args.settle_timeout
                )
        with self.orderlog_server(self.processes) as server:
            report = run_burst(
                server,
                args.orders,
                connections,
                args.timeout,
                args.settle_timeout,
                bare=baseline,
                few=few,
            )
        return self._with_processes(_with_server_placement(report, server))

    def sustained(self) -> dict[str, Any]:
        from bench.load import measure_bare, run_sustained, with_core, wrk_rate
        from bench.servers import start_bare

        args = self.args

        def wrk(server: Any) -> float | None:
            return wrk_rate(server, args.connections, args.duration, self.placement, self.workdir)

        # The bare server runs first and alone: a live orderlog server would still be
        # completing its backlog and slow the baseline down.
        self._check_processes()
        bare = start_bare(self.workdir, self.placement, processes=self.processes)
        try:
            baseline = measure_bare(
                bare, args.connections, args.duration, wrk if args.wrk else None
            )
        finally:
            bare.stop()
        with self.orderlog_server(self.processes) as server:
            report = run_sustained(server, baseline, args.connections, args.duration)
        if not args.url and not self.processes:
            report = with_core(report, self._core(report["orderlog"]["ok"]))
        return self._with_processes(_with_server_placement(report, server))

    def _core(self, orders: int) -> dict[str, Any]:
        """The same orders through the core alone, with no HTTP server (``bench.core``)."""
        from bench.core import measure_core
        from bench.servers import ROOT, scratch_database
        from orderlog.config import Settings

        with scratch_database(self.database_url, self.workdir, "core") as url:
            return measure_core(url, max(1, min(orders, CORE_MAX_ORDERS)), Settings().threads, ROOT)

    def _check_processes(self) -> None:
        """Before anything is measured: an orderlog that cannot serve N processes stops
        the bench here, not after the baseline."""
        from bench.servers import processes_flags

        if not self.args.url:
            processes_flags(self.processes)

    def _with_processes(self, report: dict[str, Any]) -> dict[str, Any]:
        """Say how many processes served, when the run asked for a number."""
        if self.processes is None:
            return report
        from bench.servers import processes_flags

        flags = " ".join(processes_flags(self.processes)) or "no flag (one process)"
        report["processes"] = self.processes
        report["table"].insert(
            0, ("processes", f"bare app {self.processes}; orderlog serve {flags}")
        )
        return report

    def store(self) -> dict[str, Any]:
        from bench.store import run_store

        if getattr(self.args, "store_processes", None):
            return self.store_processes()
        threads = [int(n) for n in self.args.store_threads.split(",") if n.strip()]
        # In-process: the appending threads (and the raw baseline) run where the
        # server's threads would: the store is used inside orderlog serve.
        where = self.placement.run_here_as_server()
        try:
            report = run_store(self.database_url, self.workdir, self.args.appends, threads)
        finally:
            self.placement.run_here_as_client()
        report["cpu"] = where
        report["table"].insert(0, ("store and baseline run on", where))
        return report

    def store_processes(self) -> dict[str, Any]:
        """k writer processes at once, each a node's own store, against raw inserts."""
        from bench.capacity import run_store_processes

        args = self.args
        # Not pinned (each process may run anywhere, as nodes do) unless asked for.
        cpus = tuple(sorted(self.placement.server_cpus)) if self.placement.pinned else None
        return run_store_processes(
            self.database_url,
            self.workdir,
            args.store_processes,
            args.seconds,
            args.threads,
            args.runs,
            cpus,
        )

    def wrk(self) -> dict[str, Any]:
        """wrk against the bare app and orderlog, for each N processes."""
        from bench.servers import BenchError, processes_flags, start_bare
        from bench.wrk import drive, summarize, wrk_binary

        args = self.args
        if args.url:
            raise BenchError("bench wrk starts its own servers, one per N: --url is not used")
        wrk_binary()
        counts = args.wrk_processes
        processes_flags(max(counts) if max(counts) > 1 else None)  # refused: stop now

        def load(server: Any) -> dict[str, Any]:
            return drive(server, args.connections, args.seconds, args.wrk_threads,
                         args.wrk_timeout, self.placement)  # fmt: skip

        measured: dict[int, dict[str, list[dict[str, Any]]]] = {
            n: {"orderlog": [], "bare": []} for n in counts
        }
        for _ in range(args.runs):
            for n in counts:
                bare = start_bare(self.workdir, self.placement, processes=n)
                try:
                    measured[n]["bare"].append(load(bare))
                finally:
                    bare.stop()
                with self.orderlog_server(n if n > 1 else None) as server:
                    measured[n]["orderlog"].append(load(server))
        settings = "defaults" if not self.server_flags else " ".join(self.server_flags)
        return summarize(measured, args.connections, args.seconds, args.wrk_threads, settings)

    def attack(self) -> dict[str, Any]:
        from bench.attack import run_attack

        args = self.args
        with self.orderlog_server() as server:
            report = run_attack(
                server,
                args.attack_connections,
                args.attack_sources or ["127.0.0.2"],
                args.attack_kinds or ["idle", "slow"],
                args.attack_duration,
                args.probe_timeout,
                args.probe_clients,
                args.trickle_every,
                settle=2.0,
            )
        return _with_server_placement(report, server)

    def rebuild(self) -> dict[str, Any]:
        from bench.rebuild import run_rebuild
        from orderlog.storage.database_url import backend_of

        if backend_of(self.database_url) != "sqlite":
            return {"skipped": "rebuild's baseline is a raw sqlite3 scan: SQLite only"}
        args = self.args
        return run_rebuild(
            self.workdir, self.placement, args.events, args.small_events, args.samples
        )


def main(argv: list[str] | None = None) -> int:
    """Run one sub-bench (or all) under each placement asked for and print the report."""
    from bench.servers import BenchError

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except BenchError as exc:
        sys.stderr.write(f"python -m bench {args.command}: {exc}\n")
        return 2


def _run(args: argparse.Namespace) -> int:
    everything = ["store", "rebuild", "burst", "sustained", "attack"]
    names = everything if args.command == "all" else [args.command]
    from orderlog.config import Settings
    from orderlog.storage.database_url import redact

    out: dict[str, Any] = {
        "command": args.command,
        "target": args.url or "orderlog serve started by the bench",
        "server_settings": "defaults" if not args.server_flags else " ".join(args.server_flags),
        "auth": "a token on every request" if args.auth else "off (no token exists)",
        "processing_delay": Settings().processing_delay,
        "database": redact(args.database or "sqlite:///<temporary directory>/bench.db"),
        "runs": [],
    }
    if not args.json:
        _say(f"python -m bench {args.command}: orderlog serve with {out['server_settings']} "
             f"(processing delay {out['processing_delay']} s, auth {out['auth']}); "
             f"database {out['database']}; server: {out['target']}")  # fmt: skip
    for pinned in PLACEMENTS[args.placement]:
        workdir = Path(tempfile.mkdtemp(prefix="orderlog-bench-"))
        placement = place(pinned)
        bench = Bench(args, workdir, placement)
        run: dict[str, Any] = {"placement": placement.as_dict(), "results": {}}
        out["runs"].append(run)
        if not args.json:
            _say(f"-- {placement.describe()}")
        try:
            for name in names:
                measure: Callable[[], dict[str, Any]] = getattr(bench, name)
                report = measure()
                run["results"][name] = report
                if not args.json:
                    _say(_render(name, report))
        finally:
            placement.restore()
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        for run in out["runs"]:
            for report in run["results"].values():
                report.pop("table", None)
                report.pop("grid", None)
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _with_server_placement(report: dict[str, Any], server: Any) -> dict[str, Any]:
    """Say where orderlog ran by its own account (its default --cpu auto picks a CPU)."""
    where = server.placement() if server.process is not None else None
    report["server_placement"] = where
    report["table"].insert(0, ("orderlog serve ran", where or "unknown (not started here)"))
    return report


def _render(name: str, report: dict[str, Any]) -> str:
    from bench.report import render

    if "skipped" in report:
        return f"{name}: skipped, {report['skipped']}"
    return render(name, report)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
