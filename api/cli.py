"""The ``orderlog`` command: ``serve``, ``rebuild``, ``backup``, ``token`` and ``log check``.

It is the composition root that wires all three layers, so it lives in the
outermost one. Failures the user can fix are one line on stderr,
``orderlog: <what> (<hint>)`` where there is a hint, and a non-zero exit; no
traceback. Every serve flag, and ``--database`` everywhere, comes from
``orderlog.config.Settings``, where its ``ORDERLOG_*`` variable and help text
are defined; a ``.env`` file in the working directory is read first (real
environment variables win), and an ``ORDERLOG_*`` name that is no setting, in
either, stops every command.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import orjson

from api import logs
from orderlog.config import Settings, env_name, load_settings, settings_fields, shown_default
from orderlog.domain.errors import OrderlogError
from orderlog.storage.tokens import SCOPES, TokenStore, parse_scopes


class _Parser(argparse.ArgumentParser):
    """A parser that refuses what it does not know itself, with its own usage (so
    ``serve --hots`` shows serve's, not the top level's) and the option nearest each
    unknown one."""

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self._refuse(extras)
        return parsed, extras

    def _refuse(self, extras: list[str]) -> NoReturn:
        options = [o for action in self._actions for o in action.option_strings]
        said = "unrecognized arguments: " + " ".join(extras)
        for word in extras:
            nearest = difflib.get_close_matches(word.split("=", 1)[0], options, n=1)
            if word.startswith("-") and nearest:
                said += f" (did you mean {nearest[0]}?)"
                break
        self.error(said)


def _add_setting(parser: argparse.ArgumentParser, f: dataclasses.Field[Any]) -> None:
    """The flag of setting ``f``, its help saying its variable and its default."""
    help_text = f"{f.metadata['help']} (env {env_name(f)}, default: {shown_default(f)})"
    if type(f.default) is bool:
        parser.add_argument(
            f.metadata["flag"],
            dest=f.name,
            default=None,
            action=argparse.BooleanOptionalAction,
            help=help_text,
        )
    else:
        parser.add_argument(f.metadata["flag"], dest=f.name, default=None, help=help_text)


DATABASE = Settings.__dataclass_fields__["database_url"]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="orderlog", description="Event-sourced order service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the REST API and process orders")
    for f in settings_fields():
        _add_setting(serve, f)
    rebuild = commands.add_parser("rebuild", help="rebuild the projections from the whole log")
    _add_setting(rebuild, DATABASE)
    rebuild.add_argument("--quiet", action="store_true", help="no progress display")
    rebuild.add_argument(
        "--offline",
        action="store_true",
        help="rebuild in place, for a database no server is using (refused while one is; "
        "default: beside the live read models, then swapped in, while servers keep "
        "answering)",
    )
    backup = commands.add_parser(
        "backup",
        help="copy the SQLite database, consistently, while the server runs",
        description="Write a consistent copy of the SQLite database to a new file (VACUUM "
        "INTO), while the server runs. PostgreSQL and MariaDB: use pg_dump / mariadb-dump.",
    )
    backup.add_argument("path", help="the new file to write; an existing file is never replaced")
    _add_setting(backup, DATABASE)
    token = commands.add_parser(
        "token",
        help="API tokens: create, list, revoke",
        description="API tokens, stored hashed in the database (shared by every node; not "
        "events, never rebuilt). Scopes: " + ", ".join(SCOPES) + ".",
    )
    where = argparse.ArgumentParser(add_help=False)
    _add_setting(where, DATABASE)
    tokens = token.add_subparsers(dest="token_command", required=True)
    create = tokens.add_parser(
        "create", parents=[where], help="create a token and print its secret, once"
    )
    create.add_argument("--name", required=True, help="the token's name (1-64 characters)")
    create.add_argument("--scopes", required=True, help="comma-separated: " + ",".join(SCOPES))
    create.add_argument(
        "--secret-file",
        help="take the secret from this file instead of making one (for provisioning "
        "containers and scripts); the secret is then not printed",
    )
    create.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing if a token of that name exists (provisioning on every start)",
    )
    tokens.add_parser(
        "list", parents=[where], help="list the tokens' names, scopes and dates (never secrets)"
    )
    revoke = tokens.add_parser("revoke", parents=[where], help="revoke a token by name")
    revoke.add_argument("name")
    _add_log(commands, where)
    return parser


def _add_log(commands: Any, where: argparse.ArgumentParser) -> None:
    log = commands.add_parser("log", help="the log itself: check that this release reads it")
    checks = log.add_subparsers(dest="log_command", required=True)
    check = checks.add_parser(
        "check",
        parents=[where],
        help="read the whole log as this release does: exit 1 naming each event it "
        "cannot read and each stream that breaks the order's rules",
        description="Read the whole log as this release reads it, while servers run "
        "(read-only, in pages): decode and upcast every event and fold every stream with "
        "the order's rules. Exit 0 when all is readable; 1 with a line per problem "
        "(position, type, reason) and a summary. Run it before deploying a release that "
        "adds an event version.",
    )
    shown = check.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        help="a progress line on stderr every few seconds (default: when stderr is a terminal)",
    )
    shown.add_argument("--quiet", action="store_true", help="print only the problems")


def _token(args: argparse.Namespace, database_url: str) -> int:
    from orderlog.domain.errors import StoreUnavailableError
    from orderlog.storage.database import explain_failure, open_database
    from orderlog.storage.store import EventStore
    from orderlog.storage.tokens import TokenStore

    store = EventStore(open_database(database_url), group_commit=False)
    try:
        store.open()
    except StoreUnavailableError as exc:
        raise explain_failure(exc.__cause__ or exc, database_url) from exc
    try:
        tokens = TokenStore(store)
        if args.token_command == "create":
            return _token_create(args, tokens)
        if args.token_command == "list":
            return _token_list(tokens)
        return _token_revoke(args, tokens)
    finally:
        store.close()


def _token_create(args: argparse.Namespace, tokens: TokenStore) -> int:
    scopes = parse_scopes(args.scopes)
    if args.if_missing and tokens.get(args.name) is not None:
        sys.stdout.write(f"token {args.name!r} exists: left as it is\n")
        return 0
    given = None
    if args.secret_file:
        given = Path(args.secret_file).read_text().strip()
    secret = tokens.create(args.name, scopes, given)
    if given is None:
        sys.stdout.write(f"{secret}\n")
        sys.stderr.write(
            f"token {args.name!r} created with {','.join(sorted(scopes))}: "
            "the secret above is shown this once\n"
        )
    else:
        sys.stdout.write(f"token {args.name!r} created from {args.secret_file}\n")
    return 0


def _token_list(tokens: TokenStore) -> int:
    """A header and a tab-separated row per token; with none, a word on stderr (so a
    script reading stdout finds no row to mistake for a token)."""
    listed = tokens.list()
    if not listed:
        sys.stderr.write("no tokens (create one: orderlog token create --name NAME --scopes ...)\n")
        return 0
    sys.stdout.write("name\tscopes\tcreated_at\n")
    for token in listed:
        sys.stdout.write(f"{token.name}\t{','.join(sorted(token.scopes))}\t{token.created_at}\n")
    return 0


def _token_revoke(args: argparse.Namespace, tokens: TokenStore) -> int:
    if not tokens.revoke(args.name):
        sys.stderr.write(f"orderlog: no token named {args.name!r}\n")
        return 2
    sys.stdout.write(f"token {args.name!r} revoked\n")
    if not tokens.list():
        sys.stderr.write(
            "orderlog: warning: that was the last token: nodes off loopback now refuse "
            "every request that needs a scope until one is made (orderlog token create); "
            "nodes on loopback or with --allow-anonymous are now open to anyone who "
            "can reach them\n"
        )
    return 0


def _log_check(args: argparse.Namespace, database_url: str) -> int:
    """Exit 0 when this release reads the whole log, 1 when it finds a problem."""
    from projections.log_check import Problem, check_store, open_log, progress_printer

    def found(problem: Problem) -> None:
        sys.stdout.write(f"{problem}\n")

    shown = args.progress or (not args.quiet and sys.stderr.isatty())
    store = open_log(database_url)
    try:
        summary = check_store(
            store, found, progress=progress_printer(sys.stderr) if shown else None
        )
    finally:
        store.close()
    if not args.quiet:
        sys.stdout.write(f"{summary}\n")
    return 1 if summary.problems else 0


def _load_dotenv() -> frozenset[str]:
    """Read ``.env`` into the environment, real variables winning; the names it set."""
    try:
        from dotenv import dotenv_values
    except ImportError:  # optional: without it, only real environment variables count
        return frozenset()
    read = {k: v for k, v in dotenv_values(".env").items() if v is not None and k not in os.environ}
    os.environ.update(read)
    return frozenset(read)


def main(argv: list[str] | None = None) -> int:
    dotenv = _load_dotenv()
    args = build_parser().parse_args(argv)
    names = {f.name for f in settings_fields()}
    overrides = {k: v for k, v in vars(args).items() if v is not None and k in names}
    try:
        settings = load_settings(overrides=overrides, dotenv=dotenv)
        if args.command == "serve":
            from api.serve import serve

            return serve(settings)  # sets up its logging itself: a supervisor forks first
        logs.configure(settings.log_level, settings.log_format)
        if args.command == "token":
            return _token(args, settings.database_url)
        if args.command == "log":
            return _log_check(args, settings.database_url)
        if args.command == "backup":
            from orderlog.storage.backup import backup

            copy = backup(settings.database_url, args.path)
            sys.stdout.write(
                f"wrote {copy.target}: a consistent copy of {copy.source}, the log up to "
                f"position {copy.position} ({copy.size} bytes)\n"
            )
            return 0
        from projections.rebuild import run

        report = run(settings.database_url, quiet=args.quiet, offline=args.offline)
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    except OrderlogError as exc:  # every failure the core names: one line, no traceback
        return report_failure(exc)


def report_failure(exc: OrderlogError) -> int:
    """A failure the core names, as one line on stderr; the exit status it gets."""
    sys.stderr.write(f"orderlog: {' '.join(str(exc).split())}\n")
    sys.stderr.flush()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
