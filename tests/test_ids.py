"""orderlog.domain.ids: unique random ids, made without a system call each."""

from __future__ import annotations

import os
import select
import uuid

import pytest

from orderlog.domain.ids import new_uuid, random_hex
from orderlog.storage.row import new_event_id
from tests.support import DEADLINE, wait_for


def test_a_new_uuid_is_a_version_4_uuid_as_text() -> None:
    for _ in range(2000):
        text = new_uuid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical: lowercase, dashed
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat() -> None:
    made = [new_uuid() for _ in range(100_000)]
    assert len(set(made)) == len(made)
    hexes = [random_hex() for _ in range(100_000)]
    assert len(set(hexes)) == len(hexes)
    assert all(len(h) == 32 and int(h, 16) >= 0 for h in hexes[:100])


def test_every_event_id_is_such_a_uuid() -> None:
    assert uuid.UUID(new_event_id()).version == 4


def test_no_id_calls_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.urandom hands the GIL to another thread for its system call: not per id."""

    def refused(n: int) -> bytes:
        raise AssertionError("os.urandom called for an id")

    monkeypatch.setattr(os, "urandom", refused)
    new_uuid()
    random_hex()
    new_event_id()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then out
        try:
            os.write(write, new_uuid().encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        # Bounded: the child writes at once; a child that never does fails the test.
        assert select.select([read], [], [], DEADLINE)[0], "the child wrote no id"
        child = os.read(read, 64).decode()
    finally:
        os.close(read)
        wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, what="the child to exit")
    # Without seeding again after the fork, the child's first id is the parent's next.
    assert uuid.UUID(child).version == 4
    assert child != new_uuid()
