"""``orderlog serve --processes N``: one node served by N forked processes sharing its socket.

This process, the supervisor, binds the listening socket once (``api.server.http_server.bind``:
SO_REUSEADDR, never SO_REUSEPORT, so a second server on the port is still refused)
and forks N children that inherit it; the kernel hands each new connection to
whichever child accepts first. The supervisor itself serves nothing, opens no
database connection and never starts a thread: a fork copies only the thread that
calls it, and a lock another thread held at that moment would stay held in the
child for good.

Child k (1..N) is a whole node (``api.node``, run by ``api.serve.run``) with its
own node id ``<node>-<k>``, ``<node>`` being ``--node-id`` or the id derived as for
one process: siblings never take each other's claims for their own, and child k
started again under the same id takes back its own claims at once (the worker's
start-up sweep). Right after the fork a child asks the kernel to SIGKILL it when
the supervisor dies (PR_SET_PDEATHSIG) and then checks that the supervisor is still
its parent, so a supervisor killed outright leaves no child holding the port. A
child reports that it serves by writing to a pipe; once all N have, the supervisor
prints the one ``orderlog serving on`` line.

A child that dies is started again (same k, same node id): at once the first time,
then after a delay that doubles while it keeps dying within ``STABLE`` seconds of
serving (up to ``MAX_DELAY``), so a child that cannot start does not spin. A child
that fails before its place ever served (a database unreachable at start, a schema
newer than this orderlog) stops the whole node: it has said why on stderr, in one
line as ``orderlog serve`` does, and the supervisor exits non-zero.

SIGTERM or SIGINT: the supervisor closes its copy of the socket (once the children
have closed theirs in their drain, new connections are refused), forwards the
signal to every child and waits for all of them, at most the node's stop deadline
and ``STOP_MARGIN`` (past a child's own watchdog); stragglers are SIGKILLed, in one
log line. It exits 0 when every child stopped cleanly, 1 otherwise.

Its private directory (on /dev/shm, or in $TMPDIR when set) holds the status file
the children read for ``/readyz`` (``api.processes``) and prometheus_client's
multiprocess files (``api.http.prometheus``); it is removed at exit. Linux only
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from api import logs
from api.cpu import choose_cpus, pin
from api.node import Node, stop_deadline
from api.processes import ProcessPlace, write_status
from api.serve import run
from api.server.http_server import bind
from orderlog.config import Settings
from orderlog.domain.errors import OrderlogError, StartupError

log = logging.getLogger(__name__)

# Past the node's stop deadline, before stragglers are SIGKILLed: a child's own
# watchdog ends it 0.5 s past that deadline, so this is for the kernel and the reaping.
STOP_MARGIN = 2.0
KILL_WAIT = 5.0  # seconds for SIGKILLed children to be reaped
FIRST_DELAY = 0.5  # before the second start of a child that keeps dying; then doubled
MAX_DELAY = 30.0
STABLE = 10.0  # a child serving this long has not died young: its next start is at once
POLL = 1.0  # the longest the supervisor sleeps without looking (signals wake it at once)
PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class _Child:
    """One place among the N: its index, node id and CPU, and its current process."""

    index: int
    node_id: str
    cpu: int | None
    pid: int = 0  # 0: no process
    ready_fd: int = -1  # the read end of its pipe while it may still write
    serving: bool = False  # this process said it serves, and has not died since
    ever_served: bool = False  # some process in this place has served
    ready_at: float | None = None  # when this process said it serves
    young_deaths: int = 0  # deaths in a row within STABLE of serving, or before
    restart_at: float | None = None
    exit_code: int | None = None  # of its last process, once stopping


def supervise(settings: Settings) -> int:
    """Serve ``settings.process_count`` processes until SIGTERM or SIGINT; the exit status."""
    libc = _libc_with_prctl(settings.source("processes"))
    if threading.active_count() > 1:
        raise RuntimeError("the supervisor must fork before any thread is started")
    logs.configure(settings.log_level, settings.log_format, batched=False)
    sockets = bind(settings)  # first: a port in use fails before anything else happens
    try:
        cpus = choose_cpus(settings.cpu, settings.process_count, settings.source("cpu"))
        private = _private_directory()
        try:
            return Supervisor(settings, sockets, cpus, private, libc).run()
        finally:
            shutil.rmtree(private, ignore_errors=True)
    finally:
        for sock in sockets:
            sock.close()


def _private_directory() -> str:
    """A new directory only this supervisor uses: in $TMPDIR when that is set, else on
    /dev/shm where there is one (memory, as prometheus_client advises for its files,
    and out of reach of the cleaners that age files out of /tmp). Those left by
    supervisors that are gone (killed outright, they could not remove their own) are
    removed first."""
    shm = "/dev/shm"
    usable = os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK)
    root = shm if usable and "TMPDIR" not in os.environ else tempfile.gettempdir()
    for entry in os.scandir(root):
        owner = entry.name.removeprefix(_PRIVATE_PREFIX).split("-", 1)[0]
        if entry.name.startswith(_PRIVATE_PREFIX) and owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(entry.path, ignore_errors=True)  # another user's: left alone
    return tempfile.mkdtemp(prefix=f"{_PRIVATE_PREFIX}{os.getpid()}-", dir=root)


_PRIVATE_PREFIX = "orderlog-supervisor-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _libc_with_prctl(named: str) -> ctypes.CDLL:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "prctl"):
            return libc
    raise StartupError(
        f"{named} above 1 needs Linux (a child must die with its supervisor)",
        "serve with --processes 1 here",
    )


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        sockets: list[socket.socket],
        cpus: list[int | None],
        private: str,
        libc: ctypes.CDLL,
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.count = len(cpus)
        node = settings.node  # derived here, once: every child's id is built on it
        self.children = [_Child(k, f"{node}-{k}", cpu) for k, cpu in enumerate(cpus, start=1)]
        self.status_file = os.path.join(private, "processes.json")
        self.metrics_dir = os.path.join(private, "prometheus")
        os.mkdir(self.metrics_dir)
        # For anything in the children that reads it; api.http.prometheus sets it up itself.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        self.port = sockets[0].getsockname()[1]
        self._libc = libc
        self._pid = os.getpid()
        self._signals: list[int] = []
        self._wake_r = self._wake_w = -1
        self._stopping_since: float | None = None
        self._kill_at = 0.0
        self._killed = False
        self._failure: int | None = None  # the exit status of a start that failed
        self._announced = False

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # The signals' C handler writes to this pipe, so a select() waiting wakes at once.
        signal.set_wakeup_fd(self._wake_w)
        handlers = {sig: signal.signal(sig, self._on_stop_signal) for sig in _STOP_SIGNALS}
        handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _wake_only)
        try:
            write_status(self.status_file, 0)
            for child in self.children:
                self._start(child)
            return self._loop()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(-1)
            for fd in (self._wake_r, self._wake_w, *(c.ready_fd for c in self.children)):
                if fd >= 0:
                    os.close(fd)

    def _loop(self) -> int:
        while True:
            self._reap()
            while self._signals:
                self._stop(self._signals.pop(0))
            now = time.monotonic()
            if self._stopping_since is not None:
                if not any(c.pid for c in self.children):
                    return self._exit_status()
                if not self._killed and now >= self._kill_at:
                    self._kill_stragglers(now)
                elif self._killed and now >= self._kill_at + KILL_WAIT:
                    log.error("SIGKILLed processes were not reaped in %.0f s", KILL_WAIT)
                    return 1
            else:
                for child in self.children:
                    if child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
                self._announce()
            self._wait(self._next_timeout(now))

    def _next_timeout(self, now: float) -> float:
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        if self._stopping_since is not None:
            due = [self._kill_at + (KILL_WAIT if self._killed else 0.0)]
        return min([POLL, *(max(0.0, at - now) for at in due)])

    def _wait(self, timeout: float) -> None:
        """Until a signal, a child's word on its pipe, or ``timeout``."""
        pipes = [c.ready_fd for c in self.children if c.ready_fd >= 0]
        readable, _, _ = select.select([self._wake_r, *pipes], [], [], timeout)
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        for child in self.children:
            if child.ready_fd in readable:
                self._read_ready(child)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # acted on by the loop, never inside a handler

    # -- children ----------------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        if threading.active_count() > 1:
            raise RuntimeError("the supervisor must not fork with a thread running")
        read_end, write_end = os.pipe()
        sys.stdout.flush()  # nothing buffered here may be written twice
        sys.stderr.flush()
        # Signals wait until the child has its own handlers (and the parent its record).
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(read_end)
                    code = self._child(child, write_end)
                finally:
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        os.close(write_end)
        child.pid, child.ready_fd = pid, read_end
        child.ready_at = child.restart_at = None
        log.info("process %d (node %s) started: pid %d", child.index, child.node_id, pid)

    def _read_ready(self, child: _Child) -> None:
        try:
            word = os.read(child.ready_fd, 64)
        except BlockingIOError:
            return
        if not word:  # its end is closed: it has nothing more to say
            os.close(child.ready_fd)
            child.ready_fd = -1
            return
        if not child.serving:
            child.serving = child.ever_served = True
            child.ready_at = time.monotonic()
            self._write_status()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            if child is None:
                continue
            if child.ready_fd >= 0:  # it may have said it serves just before it died
                os.set_blocking(child.ready_fd, False)
                self._read_ready(child)
                if child.ready_fd >= 0:
                    os.close(child.ready_fd)
                    child.ready_fd = -1
            mark_process_dead(pid, self.metrics_dir)  # its live gauges go; its counts stay
            child.pid = 0
            if child.serving:
                child.serving = False
                self._write_status()
            self._exited(child, pid, os.waitstatus_to_exitcode(status))

    def _exited(self, child: _Child, pid: int, code: int) -> None:
        what = f"process {child.index} (pid {pid}, node {child.node_id})"
        ended = f"exited with status {code}" if code >= 0 else f"was killed by signal {-code}"
        if self._stopping_since is not None:
            child.exit_code = code
            if code != 0:
                log.warning("%s %s while stopping", what, ended)
            return
        if not child.ever_served:
            log.error("%s %s before it served: stopping the node", what, ended)
            self._failure = code if code > 0 else 1
            self._stop(signal.SIGTERM)
            return
        now = time.monotonic()
        if child.ready_at is not None and now - child.ready_at >= STABLE:
            child.young_deaths = 0
        delay = 0.0 if not child.young_deaths else FIRST_DELAY * 2 ** (child.young_deaths - 1)
        delay = min(delay, MAX_DELAY)
        child.young_deaths += 1
        child.restart_at = now + delay
        log.warning("%s %s; starting it again in %.1f s", what, ended, delay)

    def _stop(self, signum: int) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            self._kill_at = self._stopping_since + stop_deadline(self.settings) + STOP_MARGIN
            for sock in self.sockets:
                sock.close()  # the children hold their own copies until they have drained
            log.info("stopping %d processes (signal %d)", self.count, signum)
        for child in self.children:
            child.restart_at = None
            if child.pid:
                with contextlib.suppress(ProcessLookupError):  # died: reaped in the loop
                    os.kill(child.pid, signum)

    def _kill_stragglers(self, now: float) -> None:
        self._killed = True
        stragglers = [c for c in self.children if c.pid]
        for child in stragglers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        log.error(
            "SIGKILLed %d processes still running %.1f s after the stop began: %s",
            len(stragglers),
            now - (self._stopping_since or now),
            ", ".join(f"{c.index} (pid {c.pid})" for c in stragglers),
        )

    def _exit_status(self) -> int:
        if self._failure is not None:
            return self._failure
        clean = not self._killed and all(c.exit_code in (None, 0) for c in self.children)
        return 0 if clean else 1

    def _write_status(self) -> None:
        write_status(self.status_file, sum(c.serving for c in self.children))

    def _announce(self) -> None:
        if self._announced or not all(c.serving for c in self.children):
            return
        self._announced = True
        address = f"http://{self.settings.host}:{self.port}"
        cpus = [c.cpu for c in self.children]
        where = "not pinned" if None in cpus else "on CPUs " + ", ".join(map(str, cpus))
        log.info("serving on %s (%d processes, %s)", address, self.count, where)
        sys.stdout.write(f"orderlog serving on {address}\n")
        sys.stdout.flush()

    # -- in the child --------------------------------------------------------------------------

    def _child(self, child: _Child, ready: int) -> int:
        """Become child ``child``: a node on the inherited sockets; its exit status."""
        if self._libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os.write(2, b"orderlog: prctl(PR_SET_PDEATHSIG) failed\n")
            return 1
        if os.getppid() != self._pid:
            return 1  # the supervisor died before the request took hold
        asked: list[int] = []
        for sig in _STOP_SIGNALS:
            signal.signal(sig, lambda signum, frame: asked.append(signum))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        for fd in (self._wake_r, self._wake_w, *(c.ready_fd for c in self.children)):
            if fd >= 0:
                os.close(fd)
        try:
            pin(child.cpu)  # before any thread (the log's writer is the first): they inherit it
            logs.configure(self.settings.log_level, self.settings.log_format)
            settings = dataclasses.replace(self.settings, node_id=child.node_id)
            place = ProcessPlace(child.index, self.count, self.status_file, self.metrics_dir)
            node = Node(settings, place).start(sockets=self.sockets)
            return run(
                node,
                child.cpu,
                announce=lambda address: _say_ready(ready),
                stop_asked=lambda: bool(asked),
            )
        except OrderlogError as exc:
            from api.cli import report_failure

            return report_failure(exc)
        except BaseException:
            traceback.print_exc()
            return 1
        finally:
            logging.shutdown()  # what the log's writer holds goes out before os._exit
            sys.stdout.flush()
            sys.stderr.flush()


def _say_ready(fd: int) -> None:
    os.write(fd, b"r")


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD: its only job is to wake the loop (through the wakeup fd)."""
