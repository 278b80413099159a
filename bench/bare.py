"""The bare endpoint the orderlog server is compared with: ``python -m bench.bare``.

A Falcon app whose POST /orders only parses the JSON body with orjson and answers
201, served by stock waitress (``waitress.create_server``, its own loop) with
orderlog's waitress settings: threads, connection_limit, backlog, poll(). What is
left between the two figures is orderlog's own work, and its own event loop.

With ``--processes N`` (N > 1) the parent binds the socket once and forks N workers
that inherit it, each a whole waitress server accepting from the shared socket: the
baseline for an orderlog serving from N processes. The parent only says where it
serves once every worker is up, passes SIGTERM/SIGINT on to them, and exits when they
have; a worker dies with its parent (Linux), so none outlives a killed bench.

With ``--wait-on-writer`` each POST also waits, as an orderlog append does, on a
group-commit writer thread (``orderlog.storage.group_commit``) whose commit only
sleeps for a sync's time: no SQL, no CPU. Beside the plain app it shows what parking
every request thread on another thread costs waitress and Falcon alone. Its answers
say how many requests shared their batch (``X-Batch-Size``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

import falcon
import orjson

from orderlog.storage.group_commit import GroupCommitter, Request

WORKER_START_TIMEOUT = 60.0  # importing nothing new, a fork is up in well under a second
STOP_GRACE = 10  # seconds the workers get after SIGTERM before SIGKILL


PRETEND_SYNC = 0.001  # seconds a pretended commit sleeps: a sync's wait, no CPU
WRITER_TIMEOUT = 10.0  # seconds a request waits for its batch, as an append is bounded


def _pretend_commit(batch: list[Request]) -> None:
    time.sleep(PRETEND_SYNC)
    for request in batch:
        request.result = len(batch)


class BareOrders:
    def __init__(self, writer: GroupCommitter | None = None) -> None:
        self._writer = writer

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = orjson.loads(req.bounded_stream.read())
        if self._writer is not None:
            shared = self._writer.submit(body, WRITER_TIMEOUT)
            resp.set_header("X-Batch-Size", str(shared))
        resp.status = falcon.HTTP_201
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps({"order_id": body.get("order_id"), "accepted": True})


class BareHealth:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"status":"ok"}'


def create_bare_app(writer: GroupCommitter | None = None) -> falcon.App:
    app = falcon.App()
    app.add_route("/orders", BareOrders(writer))
    app.add_route("/healthz", BareHealth())
    return app


def main(argv: list[str] | None = None) -> int:
    from api.server.http_server import waitress_settings
    from api.server.limits import raise_file_limit
    from orderlog.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="0")
    parser.add_argument("--threads", default=None)
    parser.add_argument("--connection-limit", dest="connection_limit", default=None)
    parser.add_argument("--backlog", default=None)
    parser.add_argument(
        "--processes", type=int, default=1, help="worker processes sharing one socket"
    )
    parser.add_argument(
        "--wait-on-writer",
        action="store_true",
        help="each POST waits on a group-commit writer that only sleeps (one process)",
    )
    args = parser.parse_args(argv)
    processes = args.processes
    if processes < 1:
        parser.error("--processes must be at least 1")
    if args.wait_on_writer and processes > 1:
        parser.error("--wait-on-writer serves from one process")
    ours = ("processes", "wait_on_writer")
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in ours}
    settings = load_settings(overrides=overrides)
    raise_file_limit(settings.connection_limit + settings.backlog + 256)
    adjustments = waitress_settings(settings)
    if processes == 1:
        return _serve_alone(adjustments, args.wait_on_writer)
    return _serve_forked(adjustments, processes)


def _serve_alone(adjustments: dict[str, Any], wait_on_writer: bool = False) -> int:
    import waitress

    writer = GroupCommitter(_pretend_commit, name="bare-writer") if wait_on_writer else None
    if writer is not None:
        writer.start()
    server = waitress.create_server(create_bare_app(writer), **adjustments)
    _say(f"bare serving on http://{adjustments['host']}:{server.effective_port}")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if writer is not None:
            writer.stop(WRITER_TIMEOUT)
    return 0


def _serve_forked(adjustments: dict[str, Any], processes: int) -> int:
    host, port = adjustments.pop("host"), int(adjustments.pop("port"))
    listener = socket.create_server((host, port), backlog=adjustments["backlog"])
    port = listener.getsockname()[1]
    ready_read, ready_write = os.pipe()
    workers: set[int] = set()
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(ready_read)
            _work(listener, adjustments, ready_write)
        workers.add(pid)
    os.close(ready_write)
    listener.close()  # the workers hold it

    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        _signal_all(workers, signal.SIGTERM)
        signal.alarm(STOP_GRACE)

    def kill(signum: int, frame: Any) -> None:
        _signal_all(workers, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGALRM, kill)
    if not _all_ready(ready_read, processes):
        _signal_all(workers, signal.SIGKILL)
        sys.stderr.write("bare: the workers did not all start\n")
        _reap(workers)
        return 1
    _say(f"bare serving on http://{host}:{port} with {processes} processes")
    failed = False
    while workers:
        pid, status = os.wait()  # retried after each signal handler (PEP 475)
        workers.discard(pid)
        if not stopping:  # a worker died under load: the figure would be wrong, stop all
            failed = True
            sys.stderr.write(f"bare: worker {pid} exited ({status}); stopping\n")
            stop(signal.SIGTERM, None)
    return 1 if failed else 0


def _work(listener: socket.socket, adjustments: dict[str, Any], ready: int) -> None:
    """One worker: a waitress server on the inherited socket, until SIGTERM."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with_parent()
        import waitress

        server = waitress.create_server(create_bare_app(), sockets=[listener], **adjustments)
        os.write(ready, b".")
        os.close(ready)
        server.run()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends SIGTERM when the parent goes, however it goes."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent went before the request was made
        os._exit(1)


def _all_ready(ready: int, processes: int) -> bool:
    """Each worker writes one byte once its server is made; wait for all, bounded."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    seen = 0
    try:
        while seen < processes:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([ready], [], [], left)[0]:
                return False
            got = os.read(ready, processes)
            if not got:  # every write end closed: a worker died before it was ready
                return False
            seen += len(got)
        return True
    finally:
        os.close(ready)


def _signal_all(workers: set[int], signum: int) -> None:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _reap(workers: set[int]) -> None:
    for pid in workers:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
