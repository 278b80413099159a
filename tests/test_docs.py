"""The docs say what the code does: the settings, scopes and problem types they list
are the real ones, every link between them leads somewhere, the README stays a short
first page linking every doc, and the README's commands run as written, printing what
it shows, against a real server."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from api.http.auth import ROUTE_SCOPES
from api.http.problem import PROBLEM_TYPES
from orderlog.config import env_example, env_name, markdown_table, settings_fields, shown_default
from tests.support import ROOT, ServerProcess, start_server

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def markdown_files() -> list[Path]:
    return [README, ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the table whose header line starts with ``header``."""
    start = text.index("\n" + header) + 1
    lines = text[start:].split("\n\n", 1)[0].splitlines()[2:]  # past header and ---
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


# -- settings -------------------------------------------------------------------------


def test_env_example_is_the_one_derived_from_the_settings() -> None:
    # Regenerate with: python -m orderlog.config env > .env.example
    assert (ROOT / ".env.example").read_text() == env_example()


def test_env_example_lists_every_setting_with_its_flag() -> None:
    text = env_example()
    for f in settings_fields():
        assert f"{env_name(f)}=" in text, env_name(f)
        assert f.metadata["flag"] in text, f.metadata["flag"]


def test_settings_page_holds_the_table_derived_from_the_settings() -> None:
    # Regenerate with: python -m orderlog.config table
    assert markdown_table() in read(DOCS / "settings.md")


def test_readme_settings_are_real_with_their_variables_and_defaults() -> None:
    fields = {f.metadata["flag"]: f for f in settings_fields()}
    rows = table_rows(read(README), "| flag | variable | default | meaning |")
    assert rows
    for flag, variable, default, _ in rows:
        f = fields[flag.strip("`")]
        assert variable.strip("`") == env_name(f), flag
        assert default.strip("`") == shown_default(f), flag


def test_readme_shows_the_two_commands_and_the_port_override() -> None:
    text = read(README)
    for command in ("make run", "make test", "ORDERLOG_PORT=8021 make run"):
        assert f"`{command}" in text or f"\n{command}" in text, command
    assert 'make run ARGS="--port 8021"' in text


# -- scopes and problems ------------------------------------------------------------------


def scope_table(text: str) -> dict[tuple[str, str], str | None]:
    """A doc's route -> scope table: each `METHOD /path` listed in a row, with the row's
    scope (None for "none"); `any OPTIONS` is left out (it is no route)."""
    scopes: dict[tuple[str, str], str | None] = {}
    for routes, scope, *_ in table_rows(text, "| route | scope |"):
        needed = re.match(r"`([a-z:]+)`", scope)
        assert needed or scope.startswith("none"), routes
        for method, path in re.findall(r"`([A-Z]+) (/[^`]*)`", routes):
            assert (path, method) not in scopes, f"{method} {path} is listed twice"
            scopes[(path, method)] = needed.group(1) if needed else None
    return scopes


@pytest.mark.parametrize("doc", ["README.md", "docs/api.md"])
def test_scope_table_is_the_one_the_code_enforces(doc: str) -> None:
    assert scope_table(read(ROOT / doc)) == ROUTE_SCOPES


def test_api_doc_lists_every_problem_type_with_its_status() -> None:
    rows = table_rows(read(DOCS / "api.md"), "| slug | status | meaning |")
    listed = {slug.strip("`"): int(status) for slug, status, _ in rows}
    assert listed == {slug: status for slug, (status, _) in PROBLEM_TYPES.items()}


# -- the README's shape and the links -------------------------------------------------------


def test_readme_is_a_short_first_page() -> None:
    lines = len(read(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def relative_links(path: Path) -> list[str]:
    """The link targets in a Markdown file that are not web addresses (code spans and
    fenced blocks left out)."""
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


def test_readme_links_every_doc() -> None:
    linked = {(ROOT / t.split("#")[0]).resolve() for t in relative_links(README)}
    for doc in sorted(DOCS.glob("*.md")):
        assert doc.resolve() in linked, f"README.md does not link {doc.relative_to(ROOT)}"
    assert (DOCS / "deployment.md").resolve() in linked


def anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file."""
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


@pytest.mark.parametrize("doc", [p.relative_to(ROOT).as_posix() for p in markdown_files()])
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(doc: str) -> None:
    source = ROOT / doc
    for target in relative_links(source):
        name, _, anchor = target.partition("#")
        linked = (source.parent / name).resolve() if name else source
        assert linked.exists(), f"{doc}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{doc}: {target} names no heading"


@pytest.mark.parametrize("doc", [p.relative_to(ROOT).as_posix() for p in markdown_files()])
def test_files_named_in_code_spans_exist(doc: str) -> None:
    # Modules move; a doc that names one by path must follow it.
    top = r"(?:api|orderlog|projections|bench|tests|deploy|docs)"
    for name in re.findall(rf"`({top}/[\w./-]*)`", read(ROOT / doc)):
        assert (ROOT / name).exists(), f"{doc}: {name} does not exist"


@pytest.mark.parametrize("doc", [p.relative_to(ROOT).as_posix() for p in markdown_files()])
def test_absolute_sqlite_paths_have_four_slashes(doc: str) -> None:
    # sqlite:///var/... is the relative path var/..., as orderlog reads it.
    misread = re.findall(r"sqlite:///(?:var|mnt|srv|tmp|home|opt|data|run)/\S*", read(ROOT / doc))
    assert not misread, f"{doc}: {misread} would be read relative to the working directory"


# -- the README's commands, run as written ----------------------------------------------------

# Lines the walkthrough does not run here, and why.
NOT_RUN_HERE = {
    "make run": "serves until stopped: the walkthrough's server is `orderlog serve`, the same",
    "make test": "the whole suite, this test among it",
    "python3 -m venv .venv": "installs from the package index; `make venv` made this one",
}
# The README's absolute places, rooted in the walkthrough's directory: the database at
# /var/lib/orderlog/orders.db is the one the README's first server serves.
PLACES = {"/var/lib/orderlog/orders.db": "orderlog.db", "/mnt/backup/": "mnt/backup/"}


@dataclass
class Walk:
    """The README's commands run in order in ``home``, with what they printed."""

    home: Path
    env: dict[str, str]
    servers: list[ServerProcess] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    printed: dict[str, str] = field(default_factory=dict)

    def place(self, text: str) -> str:
        for where, here in PLACES.items():
            text = text.replace(where, f"{self.home}/{here}")
        return text

    def shell(self, line: str) -> str:
        done = subprocess.run(
            ["bash", "-c", self.place(line)], cwd=self.home, env=self.env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def serve(self, line: str) -> None:
        args = shlex.split(self.place(line), comments=True)[2:]
        url = "sqlite:///orderlog.db"  # the default, as in a fresh clone
        if "--database" in args:
            at = args.index("--database")
            url = args.pop(at + 1)
            args.pop(at)
        self.servers.append(start_server(url, self.home, *args, env=self.env))


def venv_stand_in(home: Path) -> None:
    """``.venv/bin/python`` and ``.venv/bin/orderlog`` in ``home`` run this checkout
    with the interpreter running the tests, so README lines run there as written."""
    bin_dir = home / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, run in (("python", ""), ("orderlog", " -m api")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {sys.executable}{run} "$@"\n')
        (bin_dir / name).chmod(0o755)


def readme_blocks() -> list[tuple[str, str]]:
    """The README's fenced blocks, in order: (language, text)."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", read(README), flags=re.M | re.S)


def command_lines(block: str) -> list[str]:
    """A shell block's commands: continuation lines joined, blank lines left out."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def curl(server: ServerProcess, line: str, variables: dict[str, str]) -> tuple[Any, ...]:
    """A README ``curl`` line sent to ``server``: (status, reason, headers, body)."""
    for name, value in variables.items():
        line = line.replace(f"${name}", value)
    words = shlex.split(line, comments=True)[1:]
    method, headers, body, url = "GET", {}, None, ""
    while words:
        word = words.pop(0)
        if word in ("-i", "-s"):
            continue
        if word in ("-X", "-H", "-d"):
            value = words.pop(0)
            if word == "-X":
                method = value
            elif word == "-H":
                name, _, text = value.partition(":")
                headers[name.strip()] = text.strip()
            else:
                method, body = ("POST" if method == "GET" else method), value.encode()
        else:
            assert not word.startswith("-"), f"the walkthrough cannot send curl {word}"
            url = word
    target = urlsplit(url)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        path = target.path + (f"?{target.query}" if target.query else "")
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.reason, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def assert_answer_as_shown(answer: tuple[Any, ...], shown: str) -> None:
    """An answer matches a README sample: its status line, its headers (but the date,
    request id and length), and its body's fields, equal but for the times."""
    status, reason, headers, raw = answer
    head, _, sample_body = shown.partition("\n\n")
    status_line, *sample_headers = head.splitlines()
    assert status_line == f"HTTP/1.1 {status} {reason}"
    varying = {"date", "x-request-id", "content-length"}
    expected = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in sample_headers)}
    actual = {k.lower(): v for k, v in headers.items()}
    assert set(expected) == set(actual)
    assert {k: v for k, v in expected.items() if k not in varying} == {
        k: v for k, v in actual.items() if k not in varying
    }
    body, sample = orjson.loads(raw), json.loads(sample_body)
    assert list(body) == list(sample)
    for key, value in sample.items():
        if key.endswith("_at") and value is not None:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body[key]), key
        elif key == "processing_time_seconds" and value is not None:
            assert isinstance(body[key], float), key
        else:
            assert body[key] == value, key


def run_curl(walk: Walk, line: str, shown: str | None) -> None:
    server = walk.servers[-1]
    if shown is None:
        status, _, _, raw = curl(server, line, walk.variables)
        assert status == 200, f"{line}: {status} {raw[:200]!r}"
        orjson.loads(raw)
        return
    wanted = json.loads(shown.partition("\n\n")[2]).get("status")

    def as_shown(_: ServerProcess) -> tuple[Any, ...] | None:
        # A later status is shown after the order's work: ask again until it is done.
        answer = curl(server, line, walk.variables)
        if "POST" in line or answer[0] != 200 or orjson.loads(answer[3])["status"] == wanted:
            return answer
        return None

    assert_answer_as_shown(server.wait_until(as_shown), shown)


def run_line(walk: Walk, line: str, shown: str | None) -> None:
    """One README command, by its kind."""
    if any(line.startswith(prefix) for prefix in NOT_RUN_HERE):
        return
    if line.startswith("curl "):
        run_curl(walk, line, shown)
    elif assigned := re.fullmatch(r"(\w+)=\$\((.*)\)", line):
        walk.variables[assigned.group(1)] = walk.shell(assigned.group(2)).strip()
    elif line.startswith(".venv/bin/orderlog serve") and "--help" not in line:
        walk.serve(line)
    elif line.startswith(".venv/bin/"):
        walk.printed[shlex.join(shlex.split(line, comments=True))] = walk.shell(line)
    else:
        raise AssertionError(f"the walkthrough does not know how to run: {line}")


def walk_readme(walk: Walk) -> None:
    blocks = readme_blocks()
    for at, (language, text) in enumerate(blocks):
        if language != "sh":
            continue
        lines = command_lines(text)
        after = blocks[at + 1] if at + 1 < len(blocks) else ("", "")
        shown = after[1].strip() if after[0] == "http" and len(lines) == 1 else None
        for line in lines:
            run_line(walk, line, shown)


def test_readme_commands_run_as_written_and_print_what_it_shows(tmp_path: Path) -> None:
    home = tmp_path.resolve()
    venv_stand_in(home)
    (home / "mnt" / "backup").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERLOG_")}
    walk = Walk(home, {**env, "PYTHONPATH": str(ROOT)})
    try:
        walk_readme(walk)
        assert len(walk.servers) == 2, "the README serves once, then serves the backup"
        copy = walk.servers[1]
        auth = {"Authorization": f"Bearer {walk.variables['SECRET']}"}
        status, _, order = copy.request("GET", "/orders/o-1001", headers=auth)
        assert (status, order["status"], order["version"]) == (200, "Completed", 3)
    finally:
        for server in walk.servers:
            server.terminate()
    printed = walk.printed
    assert printed[".venv/bin/python -m orderlog.config env"] == env_example()
    assert "serve" in printed[".venv/bin/orderlog --help"]
    assert "--database" in printed[".venv/bin/orderlog serve --help"]
    rebuilt = orjson.loads(printed[".venv/bin/orderlog rebuild"])
    assert (rebuilt["total_orders"], rebuilt["status_counts"]["Completed"]) == (1, 1)
    (backup_line,) = [line for line in printed if " backup " in line]
    shown = next(text for lang, text in readme_blocks() if text.startswith("wrote "))
    pattern = re.escape(walk.place(shown.strip())).replace("81920", r"\d+")
    assert re.fullmatch(pattern, printed[backup_line].strip()), printed[backup_line]
