"""The documented settings and scopes match the real ones: every variable and flag is in
.env.example, and the README's scope table is the one ``api.http.auth`` enforces."""

from __future__ import annotations

import re
from pathlib import Path

from api.http.auth import ROUTE_SCOPES
from orderlog.config import env_example, env_name, markdown_table, settings_fields

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_is_the_one_derived_from_the_settings() -> None:
    # Regenerate with: python -m orderlog.config env > .env.example
    assert (ROOT / ".env.example").read_text() == env_example()


def test_env_example_lists_every_setting_with_its_flag() -> None:
    text = env_example()
    for f in settings_fields():
        assert f"{env_name(f)}=" in text, env_name(f)
        assert f.metadata["flag"] in text, f.metadata["flag"]


def test_readme_holds_the_settings_table_derived_from_the_settings() -> None:
    # Regenerate with: python -m orderlog.config table
    text = (ROOT / "README.md").read_text()
    assert markdown_table() in text


def test_readme_shows_the_two_commands_and_every_variable() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    for f in settings_fields():
        assert env_name(f) in text, env_name(f)


def test_readme_says_how_make_run_takes_another_port() -> None:
    # `make run` has no --port of its own: the variable, or ARGS, chooses the port.
    text = (ROOT / "README.md").read_text()
    assert "ORDERLOG_PORT=8021 make run" in text
    assert 'make run ARGS="--port 8021"' in text


def readme_scope_table() -> dict[tuple[str, str], str | None]:
    """The README's route -> scope table: each `METHOD /path` listed in a row, with the
    row's scope (None for "none"); `any OPTIONS` is left out (it is no route)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| route | scope |\n| --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    scopes: dict[tuple[str, str], str | None] = {}
    for row in table.splitlines():
        routes, scope = row.strip("|").split("|")
        needed = re.match(r"\s*`([a-z:]+)`", scope)
        for method, path in re.findall(r"`([A-Z]+) (/[^`]*)`", routes):
            assert (path, method) not in scopes, f"{method} {path} is listed twice"
            scopes[(path, method)] = needed.group(1) if needed else None
            assert needed or scope.strip().startswith("none"), row
    return scopes


def test_readme_scope_table_is_the_one_the_code_enforces() -> None:
    assert readme_scope_table() == ROUTE_SCOPES
