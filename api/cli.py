"""The ``orderlog`` command: ``serve``, ``rebuild`` and ``backup``.

It is the composition root that wires all three layers, so it lives in the
outermost one. Failures the user can fix are one line on stderr,
``orderlog: <what> (<hint>)`` where there is a hint, and a non-zero exit; no
traceback. Every serve flag comes from ``orderlog.config.Settings``, where
its ``ORDERLOG_*`` variable and help text are defined; a ``.env`` file in the
working directory is read first (real environment variables win).
"""

from __future__ import annotations

import argparse
import sys

import orjson

from api import logs
from orderlog.config import Settings, env_name, load_settings, settings_fields, shown_default
from orderlog.errors import OrderlogError


def _add_settings(parser: argparse.ArgumentParser) -> None:
    for f in settings_fields():
        kind = type(f.default)
        help_text = f"{f.metadata['help']} (env {env_name(f)}, default: {shown_default(f)})"
        if kind is bool:
            parser.add_argument(
                f.metadata["flag"],
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(f.metadata["flag"], dest=f.name, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderlog", description="Event-sourced order service.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_settings(commands.add_parser("serve", help="serve the REST API and process orders"))
    rebuild = commands.add_parser("rebuild", help="rebuild the projections from the whole log")
    rebuild.add_argument("--database", dest="database_url", default=None, help="database URL")
    rebuild.add_argument("--quiet", action="store_true", help="no progress display")
    backup = commands.add_parser(
        "backup",
        help="copy the SQLite database, consistently, while the server runs",
        description="Write a consistent copy of the SQLite database to a new file (VACUUM "
        "INTO), while the server runs. PostgreSQL and MariaDB: use pg_dump / mariadb-dump.",
    )
    backup.add_argument("path", help="the new file to write; an existing file is never replaced")
    backup.add_argument("--database", dest="database_url", default=None, help="database URL")
    return parser


def _load_dotenv() -> None:
    try:
        from dotenv import load_dotenv
    except ImportError:  # optional: without it, only real environment variables count
        return
    load_dotenv(".env", override=False)


def main(argv: list[str] | None = None) -> int:
    _load_dotenv()
    args = build_parser().parse_args(argv)
    overrides = {
        k: v for k, v in vars(args).items() if v is not None and k in Settings.__dataclass_fields__
    }
    try:
        settings = load_settings(overrides=overrides)
        logs.configure(settings.log_level, settings.log_format)
        if args.command == "serve":
            from api.server import serve

            return serve(settings)
        if args.command == "backup":
            from orderlog.backup import backup

            copy = backup(settings.database_url, args.path)
            sys.stdout.write(
                f"wrote {copy.target}: a consistent copy of {copy.source}, the log up to "
                f"position {copy.position} ({copy.size} bytes)\n"
            )
            return 0
        from projections.rebuild import run

        report = run(settings.database_url, quiet=args.quiet)
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    except OrderlogError as exc:  # every failure the core names: one line, no traceback
        sys.stderr.write(f"orderlog: {' '.join(str(exc).split())}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
