"""The dashboard's files: a fixed table of names, read once from the package, kept in memory.

A name in a URL is only ever a key in ``ASSETS``, never part of a path, so no request
can reach any other file. The page names each asset with ``?v=`` and the files'
version (a hash of their contents), so an asset fetched under the current version
may be cached for good and an upgrade changes every URL. Imports the standard
library only; the files live in ``api/http/dashboard`` and ship as package data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

DIRECTORY = "dashboard"
PAGE = "index.html"
# name in the URL -> content type; the only files served
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uplot.min.js": "text/javascript; charset=utf-8",
    "uplot.min.css": "text/css; charset=utf-8",
}
HTML = "text/html; charset=utf-8"
VERSION_MARK = b"{{version}}"  # in the page, where each asset URL's version goes


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str  # quoted, as the header carries it


@dataclass(frozen=True)
class Dashboard:
    page: StaticFile
    assets: dict[str, StaticFile]
    version: str


def _file(body: bytes, content_type: str) -> StaticFile:
    return StaticFile(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:16]}"')


def load_dashboard() -> Dashboard:
    """Read the page and its assets from the installed package."""
    folder = resources.files("api.http") / DIRECTORY
    bodies = {name: (folder / name).read_bytes() for name in ASSETS}
    digest = hashlib.sha256()
    for name in sorted(bodies):
        digest.update(name.encode() + b"\0" + bodies[name] + b"\0")
    version = digest.hexdigest()[:12]
    page = (folder / PAGE).read_bytes().replace(VERSION_MARK, version.encode())
    return Dashboard(
        page=_file(page, HTML),
        assets={name: _file(body, ASSETS[name]) for name, body in bodies.items()},
        version=version,
    )
