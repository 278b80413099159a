"""A database URL taken apart: the backend, the database, every host and port, the user
and password (unquoted), and PostgreSQL's libpq parameters; and the URL without its
password, for logs and health answers.

It imports the standard library and the domain's errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlparse

from orderlog.domain.errors import FieldError, ValidationError

_SCHEMES = {
    "sqlite": "sqlite",
    "postgres": "postgres",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}


@dataclass(frozen=True)
class DatabaseURL:
    """A database URL taken apart once, with user and password unquoted."""

    url: str
    backend: str  # 'sqlite', 'postgres' or 'mysql'
    database: str  # the file path for SQLite, the database name otherwise
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    # Every host and port named (PostgreSQL may name several: libpq tries them in turn,
    # as a client of a primary and its standbys does); host and port are the first.
    hosts: tuple[tuple[str, int | None], ...] = ()
    # PostgreSQL's libpq parameters given in the query (target_session_attrs, sslmode...).
    options: dict[str, str] = field(default_factory=dict)

    def driver_params(self) -> dict[str, Any]:
        """Connection parameters for psycopg2 or pymysql (not the database name)."""
        default = DEFAULT_PORTS.get(self.backend)
        host: str | None = self.host
        port: int | str | None = self.port or default
        if len(self.hosts) > 1:
            host = ",".join(h for h, _ in self.hosts)
            port = ",".join(str(p or default) for _, p in self.hosts)
        params: dict[str, Any] = {"host": host, "port": port, "user": self.user}
        if self.password is not None:
            params["password"] = self.password
        params.update(self.options)
        return {k: v for k, v in params.items() if v is not None}

    def with_database(self, name: str) -> str:
        """The same server and credentials, another database."""
        return urlparse(self.url)._replace(path="/" + name).geturl()

    def redacted(self) -> str:
        """The URL without its password, for logs and health answers."""
        parsed = urlparse(self.url)
        netloc, query = parsed.netloc, parsed.query
        if parsed.password is not None:
            netloc = netloc.replace(":" + parsed.password + "@", ":***@")
        if "password" in self.options:  # libpq takes it in the query too
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
        if (netloc, query) == (parsed.netloc, parsed.query):
            return self.url
        return parsed._replace(netloc=netloc, query=query).geturl()


def backend_of(url: str) -> str:
    """'sqlite', 'postgres' or 'mysql' for a database URL's scheme."""
    scheme = urlparse(url).scheme.split("+")[0]
    backend = _SCHEMES.get(scheme)
    if backend is None:
        raise ValidationError(
            [
                FieldError(
                    "database",
                    f"unsupported URL scheme {scheme!r}: use sqlite, postgresql or mysql",
                )
            ]
        )
    return backend


def parse_url(url: str) -> DatabaseURL:
    """Take a database URL apart; ValidationError names what is wrong with it."""
    backend = backend_of(url)
    parsed = urlparse(url)
    options = dict(parse_qsl(parsed.query, keep_blank_values=True))
    if options and backend != "postgres":
        name = next(iter(options))
        raise ValidationError(
            [FieldError("database", f"{backend} URLs take no query parameters (got {name!r})")]
        )
    if backend == "sqlite":
        path = unquote(parsed.path[1:]) if parsed.path else ""
        if not path or path == ":memory:":
            # Threads must share the log, and a memory database is private to a connection.
            raise ValidationError(
                [FieldError("database", "SQLite needs a file path, e.g. sqlite:///orderlog.db")]
            )
        return DatabaseURL(url, backend, path)
    hosts = _hosts(parsed.netloc.rpartition("@")[2])
    if len(hosts) > 1 and backend != "postgres":
        raise ValidationError(
            [FieldError("database", "only PostgreSQL URLs may name several hosts")]
        )
    host, port = hosts[0] if hosts else (None, None)
    return DatabaseURL(
        url,
        backend,
        unquote(parsed.path.lstrip("/")),
        host,
        port,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password is not None else None,
        hosts,
        options,
    )


def _hosts(text: str) -> tuple[tuple[str, int | None], ...]:
    """``h1:p1,h2,[::1]:p3`` as ((h1, p1), (h2, None), (::1, p3))."""
    found: list[tuple[str, int | None]] = []
    for part in filter(None, text.split(",")):
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.partition(":")
        if port_text and not (port_text.isascii() and port_text.isdigit()):
            raise ValidationError(
                [FieldError("database", f"port {port_text!r} of {host!r} is not a number")]
            )
        port = int(port_text) if port_text else None
        if port is not None and not 0 < port <= 65535:
            raise ValidationError([FieldError("database", f"port {port} is out of range")])
        found.append((unquote(host), port))
    return tuple(found)


def redact(url: str) -> str:
    """The URL without its password, for logs and health answers (even a URL that
    cannot be used: its password is hidden all the same)."""
    try:
        return parse_url(url).redacted()
    except ValidationError:
        return _PASSWORD.sub(r"\1***@", url, count=1)


# The password in a URL's user information: after "scheme://user:" and up to the last "@".
_PASSWORD = re.compile(r"^([^:/?#]+://[^:/?#@]*:)[^/?#]*@")
