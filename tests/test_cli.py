"""The ``orderlog`` command as a user meets it: what it says to a mistake, and its listings.

Each case runs the real command in a subprocess, in a fresh directory, with no
``ORDERLOG_*`` setting in its environment but the ones the case gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orderlog.storage.tokens import SCOPES
from tests.support import ROOT, create_token


def orderlog(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ORDERLOG_") or k.startswith("ORDERLOG_TEST_")
    }
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**inherited, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused command writes to stderr (exit 2, no traceback)."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("orderlog: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


# -- values that do not parse -----------------------------------------------------------


def test_a_port_that_is_not_a_number_names_the_flag_and_what_it_takes(tmp_path: Path) -> None:
    said = one_line(orderlog("serve", "--port", "abc", cwd=tmp_path))
    assert "--port: cannot use 'abc': expected a whole number" in said
    assert "invalid literal" not in said


def test_a_port_variable_that_is_not_a_number_names_the_variable(tmp_path: Path) -> None:
    said = one_line(orderlog("serve", cwd=tmp_path, env={"ORDERLOG_PORT": "abc"}))
    assert "ORDERLOG_PORT: cannot use 'abc': expected a whole number" in said
    assert "--port" not in said


@pytest.mark.parametrize(("how", "named"), [("flag", "--cpu"), ("variable", "ORDERLOG_CPU")])
def test_a_cpu_this_process_may_not_use_is_named_where_it_was_given(
    how: str, named: str, tmp_path: Path
) -> None:
    args = ["serve", "--port", "0", "--processes", "1", "--database", "sqlite:///o.db"]
    if how == "flag":
        done = orderlog(*args, "--cpu", "4096", cwd=tmp_path)
    else:
        done = orderlog(*args, cwd=tmp_path, env={"ORDERLOG_CPU": "4096"})
    said = one_line(done)
    assert f"{named}: must be auto, none or one of the CPUs allowed here" in said
    assert ("--cpu" in said) == (how == "flag")
    assert not (tmp_path / "o.db").exists()


# -- unknown variables ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("serve",), ("rebuild",), ("backup", "copy.db"), ("token", "list")],
    ids=["serve", "rebuild", "backup", "token"],
)
def test_an_unknown_variable_in_dotenv_stops_every_command(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("ORDERLOG_DATABASE=postgresql://db.example/orders\n")
    said = one_line(orderlog(*command, cwd=tmp_path))
    assert "ORDERLOG_DATABASE (in .env): not a setting" in said
    assert "did you mean ORDERLOG_DATABASE_URL?" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]  # no SQLite file made


def test_an_unknown_variable_in_the_environment_stops_the_command(tmp_path: Path) -> None:
    said = one_line(orderlog("token", "list", cwd=tmp_path, env={"ORDERLOG_THREAD": "4"}))
    assert "ORDERLOG_THREAD: not a setting" in said and "ORDERLOG_THREADS" in said
    assert "(in .env)" not in said


def test_the_entrypoints_token_variables_are_not_refused(tmp_path: Path) -> None:
    env = {"ORDERLOG_TOKEN_NAME": "deploy", "ORDERLOG_TOKEN_SCOPES": "admin"}
    done = orderlog("token", "list", "--database", "sqlite:///o.db", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr


# -- usage ------------------------------------------------------------------------------


def test_a_mistyped_serve_flag_shows_serves_usage_and_the_flag_meant(tmp_path: Path) -> None:
    done = orderlog("serve", "--hots", "0.0.0.0", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: orderlog serve "), done.stderr
    assert "unrecognized arguments: --hots" in done.stderr
    assert "did you mean --host?" in done.stderr


def test_a_mistyped_token_flag_shows_that_commands_usage(tmp_path: Path) -> None:
    done = orderlog("token", "list", "--databse", "sqlite:///o.db", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: orderlog token list "), done.stderr
    assert "did you mean --database?" in done.stderr


@pytest.mark.parametrize(
    "command",
    [("rebuild",), ("backup",), ("token", "create"), ("token", "list"), ("token", "revoke")],
)
def test_every_database_flag_shows_its_default_and_variable(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    done = orderlog(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "env ORDERLOG_DATABASE_URL, default: sqlite:///orderlog.db" in text, text


# -- tokens -----------------------------------------------------------------------------


def test_an_unknown_scope_is_refused_listing_the_scopes_plainly(tmp_path: Path) -> None:
    done = orderlog(
        "token", "create", "--name", "ci", "--scopes", "orders:write,orders:delete",
        "--database", "sqlite:///o.db", cwd=tmp_path,
    )  # fmt: skip
    said = one_line(done)
    assert "unknown scope orders:delete" in said
    assert ", ".join(SCOPES) in said
    assert "[" not in said and "'" not in said


def test_token_list_has_a_header_and_says_when_there_are_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    empty = orderlog("token", "list", "--database", url, cwd=tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == ""  # nothing for a script to mistake for a token
    assert empty.stderr.startswith("no tokens (")

    create_token(url, "ci", "orders:read", tmp_path)
    listed = orderlog("token", "list", "--database", url, cwd=tmp_path)
    header, row = listed.stdout.splitlines()
    assert header.split("\t") == ["name", "scopes", "created_at"]
    assert row.startswith("ci\torders:read\t")
    assert listed.stderr == ""
