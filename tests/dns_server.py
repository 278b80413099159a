"""A DNS server on UDP that answers A queries from a table the test changes as it runs.

It stands in for Docker's embedded DNS server (127.0.0.11), which answers a compose
service's name, or a network alias several containers share, with the addresses of
the containers that have it now: a recreated container has a new address. nginx's
``resolver`` asks it; ``answer(name, addresses)`` changes what it says from then on.
A name not in the table is NXDOMAIN; other query types get no record (NOERROR),
as AAAA does on an IPv4-only network. Answers carry a TTL of one second.
``close()`` ends its thread.
"""

from __future__ import annotations

import socket
import struct
import threading

_A, _IN = 1, 1
_NXDOMAIN = 3


class DnsServer:
    """Serves on 127.0.0.1 and a free port (``port``) until ``close``."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._table: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()

    def answer(self, name: str, addresses: list[str]) -> None:
        """From now on, answer ``name`` with these IPv4 addresses."""
        with self._lock:
            self._table[name.lower().rstrip(".")] = list(addresses)

    def close(self) -> None:
        self._closing = True
        # A datagram to itself wakes the blocked recvfrom, which then sees the flag.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wake:
            wake.sendto(b"", ("127.0.0.1", self.port))
        self._thread.join(timeout=10)
        self._sock.close()

    def _serve(self) -> None:
        while True:
            query, client = self._sock.recvfrom(512)
            if self._closing:
                return
            reply = self._reply(query)
            if reply is not None:
                self._sock.sendto(reply, client)

    def _reply(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        ident, flags, questions = struct.unpack("!HHH", query[:6])
        if questions != 1:
            return None
        labels, offset = [], 12
        while offset < len(query) and query[offset]:
            length = query[offset]
            labels.append(query[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
        end = offset + 5  # the root label, then type and class
        if end > len(query):
            return None
        qtype, _ = struct.unpack("!HH", query[offset + 1 : end])
        with self._lock:
            addresses = self._table.get(".".join(labels).lower())
        records = b""
        if addresses and qtype == _A:
            for address in addresses:
                # Name: a pointer to the question's (at byte 12); TTL 1 s; 4 bytes of address.
                records += struct.pack("!HHHIH", 0xC00C, _A, _IN, 1, 4)
                records += socket.inet_aton(address)
        rcode = _NXDOMAIN if addresses is None else 0
        count = len(addresses) if addresses and qtype == _A else 0
        # QR (an answer), the query's RD, RA, and the code.
        header = struct.pack("!HHHHHH", ident, 0x8080 | (flags & 0x0100) | rcode, 1, count, 0, 0)
        return header + query[12:end] + records
