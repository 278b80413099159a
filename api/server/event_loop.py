"""Waitress's socket loop on epoll, with registrations kept from one turn to the next.

Waitress's own poll() loop asks every open connection whether it wants to read
or write, and registers each one anew, on every turn of the loop; and the loop
turns once for every answer a request thread finishes. With a thousand clients
connected that is a thousand Python calls per answer, all holding the GIL: the
more clients wait, the slower each answer, and the more clients wait. Measured
here, it was most of the server's time in a 1,000-connection burst.

This loop asks only the connections that can have changed: those that had an
event, those a request thread just served (it marks them before waking the
loop) and the listening socket (its answer depends on the clock and the
connection count). Everything else keeps its registration. Linux only: it needs
epoll, and there is no fallback to waitress's own loop.

A connection stops wanting to read while its request is in the app, and wants to
again once it is answered. Dropping the read registration at once and adding it back
after the answer cost two epoll_ctl calls and a wake-up of the loop per request, each
handing the GIL over. So a read registration is dropped lazily: only if the client
sends while its request is in the app (a pipelined request, or a close) does the
loop drop it then. A request thread that has answered wakes the loop only when the
connection needs something its registration does not give (a read registration
dropped meanwhile, an answer left to send, a close).
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
from typing import Any

from waitress import wasyncore

_READ = select.POLLIN | select.POLLPRI
_WRITE = select.POLLOUT
# Reported whatever the registration asks for.
_ALWAYS = select.POLLHUP | select.POLLERR | select.POLLNVAL


def _wanted(dispatcher: Any) -> int:
    """The events a dispatcher wants now, by its own account."""
    mask = 0
    if dispatcher.readable():
        mask |= _READ
    if dispatcher.writable() and not dispatcher.accepting:
        mask |= _WRITE
    return mask


class EventLoop:
    """An epoll set mirroring a waitress socket map; see the module docstring."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._registered: dict[int, int] = {}  # fd -> event mask
        # Filled by request threads and the main thread alike: deque appends and
        # pops are atomic, so none is lost between a drain and the next poll.
        self._touched: collections.deque[int] = collections.deque()
        self._always: list[Any] = []  # dispatchers asked on every turn
        # The connection each request thread is serving (set by the channel).
        self.serving = threading.local()
        self._stopped = False
        # A pipe of our own to wake the poll: a byte written to it is safe from any thread
        # and from a signal handler (waitress's trigger takes a lock the loop may hold).
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)

    # -- the socket map reports here ---------------------------------------------

    def added(self, fd: int) -> None:
        self._touched.append(fd)

    def removed(self, fd: int) -> None:
        # Called before the socket is closed, so the descriptor is still ours to drop.
        if self._registered.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    # -- what may have changed ------------------------------------------------------

    def always_ask(self, dispatcher: Any) -> None:
        self._always.append(dispatcher)

    def touch(self, dispatcher: Any) -> None:
        fd = getattr(dispatcher, "_fileno", None)
        if fd is not None:
            self._touched.append(fd)

    def touch_served(self) -> None:
        """Called by a request thread just before it wakes the loop."""
        channel = getattr(self.serving, "channel", None)
        if channel is not None:
            self.touch(channel)

    def served_as_registered(self) -> bool:
        """Whether the connection this request thread serves wants just what it is
        registered for, so the loop need not be woken for it. Should the loop drop its
        read registration at the same moment, the loop looks again itself (``turn``)."""
        channel = getattr(self.serving, "channel", None)
        fd = getattr(channel, "_fileno", None)
        if fd is None:
            return False
        wanted = _wanted(channel)
        return wanted != 0 and wanted == self._registered.get(fd)

    # -- the loop ----------------------------------------------------------------------

    def run(self, socket_map: dict[int, Any], timeout: float) -> None:
        while socket_map and not self._stopped:
            self.turn(socket_map, timeout)

    def stop(self) -> None:
        """End ``run`` at the end of its current turn, or before it starts; safe from any
        thread and from a signal handler."""
        self._stopped = True
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def turn(self, socket_map: dict[int, Any], timeout: float) -> None:
        touched = self._touched
        for dispatcher in self._always:
            fd = dispatcher._fileno
            if fd is not None:
                self._update(fd, dispatcher)
        while touched:
            fd = touched.popleft()
            self._update(fd, socket_map.get(fd))
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:
            return
        for fd, flags in events:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            dispatcher = socket_map.get(fd)
            if dispatcher is None:
                continue
            if flags & _READ and not dispatcher.readable():
                # Its request is in the app and the client sent more: the read
                # registration, kept lazily, is dropped now.
                others = self._registered.get(fd, 0) & ~_READ
                self._set(fd, others)
                if dispatcher.readable():  # answered meanwhile: look again next turn
                    touched.append(fd)
                flags &= ~_READ
                if not others:  # unregistered now, as if it had been all along
                    continue
            if flags:
                wasyncore.readwrite(dispatcher, flags)
            # A request just taken into the app: its thread wakes the loop if the
            # answer needs it (``served_as_registered``); until then its registration
            # stays as it is, rather than catch the thread in the middle of a write.
            if not getattr(dispatcher, "requests", None):
                touched.append(fd)

    def _update(self, fd: int, dispatcher: Any) -> None:
        if dispatcher is None:
            return
        mask = _wanted(dispatcher)
        old = self._registered.get(fd)
        # Only the read registration to drop: kept (see the module docstring).
        if mask == old or (old is not None and mask | _READ == old):
            return
        self._set(fd, mask)

    def _set(self, fd: int, mask: int) -> None:
        old = self._registered.get(fd)
        if mask == old:
            return
        try:
            if not mask:
                if old is not None:
                    del self._registered[fd]
                    self._epoll.unregister(fd)
            elif old is None:
                self._epoll.register(fd, mask)
                self._registered[fd] = mask
            else:
                self._epoll.modify(fd, mask)
                self._registered[fd] = mask
        except OSError:  # closed meanwhile: its removal has been (or will be) reported
            self._registered.pop(fd, None)

    def close(self) -> None:
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class LoopMap(dict[int, Any]):
    """A waitress socket map that tells its loop which descriptors come and go."""

    def __init__(self, loop: EventLoop) -> None:
        super().__init__()
        self.loop = loop

    def __setitem__(self, fd: int, dispatcher: Any) -> None:
        super().__setitem__(fd, dispatcher)
        self.loop.added(fd)

    def __delitem__(self, fd: int) -> None:
        super().__delitem__(fd)
        self.loop.removed(fd)

    def pop(self, fd: int, *default: Any) -> Any:
        had = fd in self
        value = super().pop(fd, *default)
        if had:
            self.loop.removed(fd)
        return value
