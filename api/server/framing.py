"""Where a request and its answer end on a connection: the request parser and the task.

A request whose body's length another parser or a proxy could read otherwise (RFC 9112
§6.1, §6.3: Transfer-Encoding with Content-Length, anything but a lone ``chunked``,
chunked in HTTP/1.0, Content-Length twice or not in digits, framing headers spelt with
``_`` or folded over lines) is answered 400 before the app sees it and its connection
closed: what follows it on the wire is never read as a request (a smuggled one).

An HTTP/1.1 answer without a body (204, 304) keeps its connection open. The parser also
notes when a request had fully arrived, which the app reads from the WSGI environment.

It imports waitress, and from ``api.http`` only the problem format and the arrival key.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from waitress.parser import HTTPRequestParser, ParsingError, TransferEncodingNotImplemented
from waitress.task import WSGITask
from waitress.utilities import BadRequest

from api.http.inputs import ARRIVED
from api.http.problem import PROBLEM_JSON, bad_request
from orderlog.domain.errors import FieldError

# A body up to this size goes out with its head (copied once into one buffer).
ONE_SEND = 256 * 1024


class Task(WSGITask):
    """Waitress's task, keeping HTTP/1.1 connections open after bodiless answers.

    Waitress closes any HTTP/1.1 connection whose answer has no Content-Length,
    including 204 and 304, which carry no body and so need none: that broke
    conditional polling (If-None-Match, 304) on keep-alive connections.
    """

    _bodiless = False

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        environ[ARRIVED] = getattr(self.request, "arrived", None)
        return environ

    def build_response_header(self) -> bytes:
        self._bodiless = (
            self.version == "1.1"
            and not self.has_body
            and self.request.headers.get("CONNECTION", "").lower() != "close"
        )
        try:
            return super().build_response_header()  # type: ignore[no-any-return]
        finally:
            self._bodiless = False

    def set_close_on_finish(self) -> None:
        if not self._bodiless:  # nothing to delimit: no reason to close
            super().set_close_on_finish()

    def write(self, data: bytes) -> None:
        """The head and a body that fits its Content-Length in one write: one send, one
        packet, where waitress sends the head and the body apart (two system calls, each
        handing the GIL over, and two packets for the client to read)."""
        length = self.content_length
        if (
            self.wrote_header
            or not self.complete
            or not data
            or not self.has_body
            or self.chunked_response
            or length is None
            or len(data) > min(length - self.content_bytes_written, ONE_SEND)
        ):
            super().write(data)
            return
        head = self.build_response_header()
        self.wrote_header = True
        self.content_bytes_written += len(data)
        self.channel.write_soon(head + data)


class Refused(BadRequest):
    """A request refused before the app sees it, answered as problem+json; waitress's
    error task sends it and closes the connection."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.problem = bad_request(
            "ambiguous-framing",
            "the request's length could be read more than one way; the connection is closed",
            [FieldError(field, message)],
        )

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        headers = [("Content-Type", PROBLEM_JSON), ("X-Content-Type-Options", "nosniff")]
        return f"{self.code} {self.reason}", headers, orjson.dumps(self.problem.to_problem())


TRANSFER_ENCODING = b"transfer-encoding"
CONTENT_LENGTH = b"content-length"
_FRAMING_NAMES = {TRANSFER_ENCODING: "Transfer-Encoding", CONTENT_LENGTH: "Content-Length"}


def framing_refusal(header_plus: bytes) -> Refused | None:
    """Why a request's head (its request line and headers, as received) leaves the length
    of its body open to more than one reading, if it does (RFC 9112 §6.1, §6.3, §5.2).

    Waitress reads such requests one way (chunked wins over Content-Length, a folded
    line is joined, a name with ``_`` is dropped, HTTP/1.0 ignores Transfer-Encoding);
    a proxy in front may read them another, and then what one sees as a body the other
    sees as a request of its own.
    """
    lowered = header_plus.lower()
    if _plainly_framed(header_plus, lowered):
        return None
    request_line, _, rest = header_plus.partition(b"\r\n")
    codings: list[bytes] = []
    lengths: list[bytes] = []
    name = b""
    for line in rest.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            folded = _FRAMING_NAMES.get(name.lower(), name.decode("latin-1"))
            return Refused(folded, "must be sent on one line, not folded onto the next")
        name, _, value = line.partition(b":")
        key = name.lower()
        if key.replace(b"_", b"-") in _FRAMING_NAMES and b"_" in key:
            spelt = _FRAMING_NAMES[key.replace(b"_", b"-")]
            return Refused(spelt, f"must be spelt {spelt}, with a hyphen")
        if key == TRANSFER_ENCODING:
            codings.append(value.strip(b" \t"))
        elif key == CONTENT_LENGTH:
            lengths.append(value.strip(b" \t"))
    if codings:
        if lengths:
            return Refused("Transfer-Encoding", "must not come with Content-Length")
        if not request_line.rstrip().endswith(b" HTTP/1.1"):
            return Refused("Transfer-Encoding", "needs HTTP/1.1")
        if len(codings) > 1 or codings[0].lower() != b"chunked":
            return Refused("Transfer-Encoding", "must be chunked alone, sent once")
    if len(lengths) > 1:
        return Refused("Content-Length", "must be sent once")
    if lengths and not lengths[0].isdigit():
        return Refused("Content-Length", "must be a number in ASCII digits")
    return None


_LENGTH_LINE = b"\r\ncontent-length:"


def _plainly_framed(header_plus: bytes, lowered: bytes) -> bool:
    """The common case, told in a few scans of the bytes: no Transfer-Encoding, no
    folded line, no framing name spelt with ``_``, and at most one Content-Length of
    ASCII digits. Anything else gets the line-by-line reading."""
    if b"transfer" in lowered or b"content_length" in lowered:
        return False
    if b"\r\n " in header_plus or b"\r\n\t" in header_plus:
        return False
    start = lowered.find(_LENGTH_LINE)
    if start < 0:
        return True
    if lowered.find(_LENGTH_LINE, start + 1) >= 0:
        return False
    end = lowered.find(b"\r\n", start + 2)
    return lowered[start + len(_LENGTH_LINE) : end if end >= 0 else None].strip(b" \t").isdigit()


class RequestParser(HTTPRequestParser):
    """Waitress's request parser, refusing requests framed ambiguously (see
    ``framing_refusal``), and reading nothing past a request it refuses: the
    connection closes after the answer, and what came after is never a request.
    It notes when the request had fully arrived: the moment its answer's deadline
    counts from, however long it then waits for a thread."""

    arrived: float | None = None

    def parse_header(self, header_plus: bytes) -> None:
        refusal = framing_refusal(header_plus)
        try:
            super().parse_header(header_plus)
        except (ParsingError, TransferEncodingNotImplemented):
            if refusal is None:
                raise  # waitress's own refusal
        if refusal is not None:
            self.close()  # no body is read: the request ends with its head
            self.body_rcv = None
            self.chunked = False
            self.content_length = 0
            self.error = refusal

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if self.completed and self.arrived is None:
            self.arrived = time.monotonic()
        # An error ends the connection: the rest of what was read is dropped unparsed.
        return len(data) if self.error is not None else consumed
