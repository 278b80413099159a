"""bench.server_cpu: a server's CPU is its own and its children's, read from /proc."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from typing import IO

import pytest

from bench.server_cpu import cpu_seconds, per_item_us, thread_cpu_seconds
from tests.support import DEADLINE

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")

_BURN = """
import sys, time
sys.stdout.write("ready\\n"); sys.stdout.flush()
end = time.process_time() + float(sys.argv[1])
while time.process_time() < end:
    pass
sys.stdout.write("done\\n"); sys.stdout.flush()
sys.stdin.read()
"""


def line_within(stream: IO[str], seconds: float) -> str:
    """The child's next line, or a failure once ``seconds`` pass without one."""
    assert select.select([stream], [], [], seconds)[0], "the child said nothing in time"
    return stream.readline()


def test_a_childs_cpu_counts_for_its_parent_while_it_lives() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _BURN, "0.5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert line_within(child.stdout, DEADLINE) == "ready\n"
        mine_before = time.process_time()
        before = cpu_seconds(os.getpid())
        assert line_within(child.stdout, DEADLINE) == "done\n"  # it has burnt 0.5 s of CPU
        after = cpu_seconds(os.getpid())
        mine = time.process_time() - mine_before
    finally:
        try:
            child.communicate("", timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate(timeout=30)
    assert before is not None and after is not None
    # The child's half second, give or take a clock tick or two, plus what this
    # process spent meanwhile.
    assert 0.45 <= after - before - mine <= 0.7


def test_a_server_without_a_process_here_has_no_figure() -> None:
    assert cpu_seconds(None) is None
    assert per_item_us(None, 1.0, 10) is None
    assert per_item_us(1.0, 2.0, 0) is None
    assert per_item_us(1.0, 1.5, 1000) == 500.0


def test_each_live_thread_is_charged_its_own_cpu() -> None:
    done, release = threading.Event(), threading.Event()

    def burn() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass
        done.set()
        release.wait(DEADLINE)  # alive while it is read

    burner = threading.Thread(target=burn)
    sleeper = threading.Thread(target=release.wait, args=(DEADLINE,))
    burner.start()
    sleeper.start()
    try:
        assert done.wait(DEADLINE), "the burner never finished"
        seconds = thread_cpu_seconds(os.getpid())
        assert seconds[burner.native_id] >= 0.15  # its 0.2 s, in clock ticks
        assert seconds[sleeper.native_id] < 0.05  # waiting costs nothing
    finally:
        release.set()
        burner.join(DEADLINE)
        sleeper.join(DEADLINE)
