"""``python -m bench attack``: what a normal client gets while another client hoards connections.

The attacker (``Attack``) opens many connections from its own source addresses
(127.0.0.2 by default: Linux routes all of 127/8 to the loopback) and holds them
in one of three ways: ``idle`` sends nothing; ``slow`` trickles an endless header
one byte at a time (slowloris); ``keep-alive`` sends one whole request, reads the
answer and then stays idle. A connection the server closes is opened again a
moment later, as an attacker would. It runs on its own thread with epoll, so the
tests can use it in-process; the bench runs it in a child process so it does not
share the measuring client's interpreter.

Meanwhile a normal client on 127.0.0.1 asks ``/healthz`` and ``POST /orders``,
each on a fresh connection (a newcomer, which is who an attack locks out), and
the bench reports its latency percentiles and failures with and without the
attack. A request with no answer within the probe timeout counts as a failure;
the percentiles count failures as slower than any answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import math
import multiprocessing
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from api.server.limits import raise_file_limit
from bench import loadgen
from bench.load import order_body
from bench.report import percentile
from bench.servers import Server

KINDS = ("idle", "slow", "keep-alive")
_TICK = 0.2  # seconds between the attacker's rounds of trickling and reopening
_SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: attack\r\nX-Padding: "
_KEEP_ALIVE_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: attack\r\n\r\n"


@dataclass
class _Slot:
    kind: str
    source: str
    sock: socket.socket | None = None
    connected: bool = False
    sent: int = 0  # bytes of the slow header sent on this connection
    next_send: float = 0.0
    reopen_at: float = 0.0


@dataclass
class AttackStats:
    """What the attacker saw: ``held`` is its open connections (connected or connecting)."""

    slots: int = 0
    opened: int = 0
    connected: int = 0
    held: int = 0
    closed_by_server: int = 0
    connect_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "opened": self.opened,
            "connected": self.connected,
            "held": self.held,
            "closed_by_server": self.closed_by_server,
            "connect_errors": self.connect_errors,
            "errors": dict(self.errors.most_common(5)),
        }


class Attack:
    """Holds ``connections`` connections to host:port open, idle or slow; see the module doc.

    ``sources`` are the local addresses connections are made from, in turn; ``kinds``
    the ways they are held, in turn. A slow connection sends one byte every
    ``trickle_every`` seconds; a connection the server closed is reopened after
    ``reopen_after`` seconds. Use as a context manager, or ``start`` and ``stop``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        connections: int,
        *,
        sources: Sequence[str] = ("127.0.0.2",),
        kinds: Sequence[str] = ("idle", "slow"),
        trickle_every: float = 5.0,
        reopen_after: float = 1.0,
    ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds or not sources:
            raise ValueError(f"kinds must be some of {KINDS} and sources not empty")
        self.address = (host, port)
        self.trickle_every = trickle_every
        self.reopen_after = reopen_after
        pairs = zip(itertools.cycle(kinds), itertools.cycle(sources))
        self._slots = [_Slot(kind, source) for kind, source in itertools.islice(pairs, connections)]
        self.stats = AttackStats(slots=connections)
        self._by_fd: dict[int, _Slot] = {}
        self._epoll = select.epoll()
        self._stop = threading.Event()
        self.opened_all = threading.Event()  # every slot has tried to connect once
        self._thread = threading.Thread(target=self._run, name="attack", daemon=True)

    def __enter__(self) -> Attack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Attack:
        raise_file_limit(len(self._slots) + 1024)
        self._thread.start()
        return self

    def stop(self) -> AttackStats:
        self._stop.set()
        self._thread.join(30)
        return self.stats

    # -- the attacker's own loop ---------------------------------------------------------

    def _run(self) -> None:
        try:
            for slot in self._slots:
                if self._stop.is_set():
                    break
                self._open(slot, time.monotonic())
            self.opened_all.set()
            while not self._stop.is_set():
                for fd, flags in self._epoll.poll(_TICK):
                    slot = self._by_fd.get(fd)
                    if slot is not None:
                        self._event(slot, flags)
                self._tick(time.monotonic())
        finally:
            self.opened_all.set()
            for slot in self._slots:
                self._close(slot)
            self._epoll.close()

    def _open(self, slot: _Slot, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((slot.source, 0))
            code = sock.connect_ex(self.address)
        except OSError as exc:
            sock.close()
            self._failed(slot, now, f"{type(exc).__name__}: {exc}")
            return
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(slot, now, errno.errorcode.get(code, str(code)))
            return
        slot.sock, slot.connected, slot.sent = sock, False, 0
        self._by_fd[sock.fileno()] = slot
        self._epoll.register(sock.fileno(), select.EPOLLOUT | select.EPOLLIN)
        self.stats.opened += 1
        self.stats.held += 1

    def _failed(self, slot: _Slot, now: float, why: str) -> None:
        self.stats.connect_errors += 1
        self.stats.errors[why] += 1
        slot.reopen_at = now + self.reopen_after

    def _event(self, slot: _Slot, flags: int) -> None:
        sock = slot.sock
        assert sock is not None
        if not slot.connected and flags & select.EPOLLOUT:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._lost(slot, errno.errorcode.get(code, str(code)), connected=False)
                return
            slot.connected = True
            self.stats.connected += 1
            self._epoll.modify(sock.fileno(), select.EPOLLIN)
            if slot.kind == "keep-alive":
                self._send(slot, _KEEP_ALIVE_REQUEST)
            elif slot.kind == "slow":
                slot.next_send = time.monotonic()
            return
        if flags & select.EPOLLIN:
            try:
                data = sock.recv(65536)
            except OSError as exc:
                self._lost(slot, errno.errorcode.get(exc.errno or 0, str(exc)), True)
                return
            if not data:
                self._lost(slot, "closed by the server", connected=True)
            return  # an answer on a keep-alive connection: read, and stay idle
        if flags & (select.EPOLLHUP | select.EPOLLERR):
            self._lost(slot, "hang-up", connected=slot.connected)

    def _send(self, slot: _Slot, data: bytes) -> None:
        assert slot.sock is not None
        try:
            slot.sock.send(data)
        except OSError as exc:
            self._lost(slot, errno.errorcode.get(exc.errno or 0, str(exc)), connected=True)

    def _tick(self, now: float) -> None:
        for slot in self._slots:
            if slot.sock is None:
                if now >= slot.reopen_at:
                    self._open(slot, now)
            elif slot.kind == "slow" and slot.connected and now >= slot.next_send:
                slot.next_send = now + self.trickle_every
                # One byte of an endless header: the request line, then padding forever.
                byte = _SLOW_HEAD[slot.sent : slot.sent + 1] or b"a"
                slot.sent += 1
                self._send(slot, byte)

    def _lost(self, slot: _Slot, why: str, connected: bool) -> None:
        if connected:
            self.stats.closed_by_server += 1
        else:
            self.stats.connect_errors += 1
        self.stats.errors[why] += 1
        self._close(slot)
        slot.reopen_at = time.monotonic() + self.reopen_after

    def _close(self, slot: _Slot) -> None:
        if slot.sock is None:
            return
        self._by_fd.pop(slot.sock.fileno(), None)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(slot.sock.fileno())
        slot.sock.close()
        slot.sock = None
        slot.connected = False
        self.stats.held -= 1


# -- the bench: a normal client with and without the attack ----------------------------------


def _attack_child(
    host: str,
    port: int,
    connections: int,
    sources: list[str],
    kinds: list[str],
    trickle_every: float,
    ready: Any,
    done: Any,
    results: Any,
) -> None:
    """The attacker in a child process: hold the connections until ``done`` is set."""
    attack = Attack(
        host, port, connections, sources=sources, kinds=kinds, trickle_every=trickle_every
    ).start()
    attack.opened_all.wait()
    ready.set()
    done.wait()
    held = attack.stats.as_dict()  # before stop() closes them all
    attack.stop()
    results.put(held)


@contextlib.contextmanager
def attack_process(
    host: str,
    port: int,
    connections: int,
    sources: list[str],
    kinds: list[str],
    trickle_every: float,
    settle: float,
) -> Any:
    """Run an ``Attack`` in a child process; yields a dict filled with its stats at the end."""
    context = multiprocessing.get_context("spawn")
    ready, done, results = context.Event(), context.Event(), context.Queue()
    child = context.Process(
        target=_attack_child,
        args=(host, port, connections, sources, kinds, trickle_every, ready, done, results),
        daemon=True,
    )
    child.start()
    stats: dict[str, Any] = {}
    try:
        if not ready.wait(120):
            raise RuntimeError("the attacker did not open its connections within 120 s")
        time.sleep(settle)  # let the server take in what the attacker opened
        yield stats
    finally:
        done.set()
        with contextlib.suppress(Exception):
            stats.update(results.get(timeout=60))
        child.join(30)
        if child.is_alive():
            child.kill()


async def _probe(server: Server, duration: float, timeout: float, workers: int) -> dict[str, Any]:
    """Alternate GET /healthz and POST /orders on fresh connections for ``duration`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    run = uuid.uuid4().hex[:8]
    counter = itertools.count()
    answers: dict[str, list[loadgen.Response]] = {"healthz": [], "orders": []}

    async def worker() -> None:
        while loop.time() < deadline:
            n = next(counter)
            if n % 2:
                request: loadgen.Request = ("POST", "/orders", order_body(f"probe-{run}-{n}"))
                kind = "orders"
            else:
                request, kind = ("GET", "/healthz", None), "healthz"
            (response,) = await loadgen.send_all(
                server.host, server.port, [request], 1, keep_alive=False, timeout=timeout
            )
            answers[kind].append(response)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return {
        "healthz": _tail(answers["healthz"], 200, timeout),
        "orders": _tail(answers["orders"], 201, timeout),
    }


def _tail(responses: list[loadgen.Response], ok: int, timeout: float) -> dict[str, Any]:
    """Counts and percentiles; a request without its answer counts as slower than any."""
    latencies = [r.latency if r.status == ok else math.inf for r in responses]
    failed = Counter(r.error or f"HTTP {r.status}" for r in responses if r.status != ok)

    def ms(q: float) -> float | None:
        value = percentile(latencies, q)
        return None if value is None or math.isinf(value) else round(value * 1000, 2)

    return {
        "requests": len(responses),
        "answered": len(responses) - sum(failed.values()),
        "failed": sum(failed.values()),
        "failure_kinds": dict(failed.most_common(5)),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "timeout_s": timeout,
    }


def _addresses(sources: list[str]) -> str:
    if len(sources) <= 2:
        return " and ".join(sources)
    return f"{len(sources)} addresses ({sources[0]} to {sources[-1]})"


def _shown(tail: dict[str, Any]) -> str:
    def one(value: float | None) -> str:
        return f"> {tail['timeout_s']:g} s (no answer)" if value is None else f"{value:g}"

    return (
        f"{one(tail['p50_ms'])} / {one(tail['p99_ms'])}; "
        f"{tail['answered']} of {tail['requests']} answered"
    )


def run_attack(
    server: Server,
    connections: int,
    sources: list[str],
    kinds: list[str],
    duration: float,
    timeout: float,
    workers: int,
    trickle_every: float,
    settle: float,
) -> dict[str, Any]:
    """The normal client's figures without, then with, the attack running."""
    quiet = asyncio.run(_probe(server, duration, timeout, workers))
    with attack_process(
        server.host, server.port, connections, sources, kinds, trickle_every, settle
    ) as attacker:
        attacked = asyncio.run(_probe(server, duration, timeout, workers))
    results: dict[str, Any] = {
        "attack": {
            "connections": connections,
            "sources": sources,
            "kinds": kinds,
            "trickle_every_s": trickle_every,
            "attacker": attacker,
        },
        "duration_s": duration,
        "probe_workers": workers,
        "quiet": quiet,
        "under_attack": attacked,
    }
    held = attacker.get("held", "?")
    results["table"] = [
        ("attack", f"{connections:,} connections from {_addresses(sources)} "
                   f"({' and '.join(kinds)}), one byte every {trickle_every:g} s when slow"),
        ("attacker at the end: held / closed by server",
         f"{held} / {attacker.get('closed_by_server', '?')}"),
        ("probe", f"{workers} clients on 127.0.0.1, fresh connection per request, "
                  f"{duration:g} s per phase"),
        ("quiet: /healthz p50 / p99 (ms)", _shown(quiet["healthz"])),
        ("quiet: POST /orders p50 / p99 (ms)", _shown(quiet["orders"])),
        ("attacked: /healthz p50 / p99 (ms)", _shown(attacked["healthz"])),
        ("attacked: POST /orders p50 / p99 (ms)", _shown(attacked["orders"])),
    ]  # fmt: skip
    failures = {**attacked["healthz"]["failure_kinds"], **attacked["orders"]["failure_kinds"]}
    if failures:
        results["table"].append(("attacked: failures", failures))
    return results
