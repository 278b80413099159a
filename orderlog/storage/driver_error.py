"""What a database driver's error means, read from its code, never from its message.

Messages are worded (and translated) by the server and the driver, and words match
the wrong error. The codes: sqlite3's ``sqlite_errorcode``, psycopg2's ``pgcode``
(PostgreSQL's SQLSTATE), PyMySQL's error number (its first argument). peewee keeps
the driver's error as ``orig``. It imports the standard library only: the drivers
are recognised by their errors' attributes, never imported.
"""

from __future__ import annotations

import re
from enum import Enum

_SQLITE_FULL = 13  # the primary result code; extended codes keep it in the low byte
_POSTGRES_DISK_FULL = "53100"
# ER_DISK_FULL, ER_RECORD_FILE_FULL ("The table ... is full").
_MYSQL_FULL = {1021: "ER_DISK_FULL", 1114: "ER_RECORD_FILE_FULL"}
# EE_WRITE, ER_ERROR_ON_WRITE, ER_GET_ERRNO: a failed write whose operating-system
# error (28 is ENOSPC) MariaDB gives only inside its message.
_MYSQL_WRITE_ERRORS = {3, 1026, 1030}
_MYSQL_ENOSPC = re.compile(r"(?:errcode:|errno:|got error) 28\b", re.IGNORECASE)
_POSTGRES_DEADLOCK = "40P01"  # deadlock_detected
_MYSQL_DEADLOCK = 1213  # ER_LOCK_DEADLOCK


def driver_error(exc: BaseException | None) -> BaseException | None:
    """The driver's own error behind ``exc`` (peewee keeps it as ``orig``, a peewee
    error again when one passed through its wrapper twice)."""
    driver = exc
    while isinstance(getattr(driver, "orig", None), BaseException):
        driver = driver.orig  # type: ignore[union-attr]
    return driver


def mysql_number(driver: BaseException | None) -> int | None:
    """PyMySQL's error number, None for any other error."""
    if driver is None or not type(driver).__module__.startswith("pymysql") or not driver.args:
        return None
    number = driver.args[0]
    return number if isinstance(number, int) else None


def disk_full_code(exc: BaseException) -> str | None:
    """The driver's code when ``exc`` says the database's disk is full, else None.

    SQLite's SQLITE_FULL, PostgreSQL's SQLSTATE 53100 (disk_full), MariaDB/MySQL's
    errors 1021 and 1114, and its failed writes whose operating-system error is ENOSPC.
    """
    driver = driver_error(exc)
    if driver is None:
        return None
    sqlite_code = getattr(driver, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return "SQLITE_FULL / ENOSPC" if sqlite_code & 0xFF == _SQLITE_FULL else None
    pgcode = getattr(driver, "pgcode", None)
    if pgcode is not None:
        return f"SQLSTATE {pgcode} disk_full" if pgcode == _POSTGRES_DISK_FULL else None
    number = mysql_number(driver)
    if number in _MYSQL_FULL:
        return f"error {number} {_MYSQL_FULL[number]}"
    if number in _MYSQL_WRITE_ERRORS and _MYSQL_ENOSPC.search(str(driver.args[1:])):
        return f"error {number} with ENOSPC"
    return None


def is_deadlock(exc: BaseException | None) -> bool:
    """Whether the database ended ``exc``'s transaction as a deadlock's victim: rolled back
    whole, so trying again is safe. MariaDB picks one when transactions that looked for
    the same missing row (holding the gap it would go in) then insert it at once."""
    driver = driver_error(exc)
    if driver is None:
        return False
    if getattr(driver, "pgcode", None) == _POSTGRES_DEADLOCK:
        return True
    return mysql_number(driver) == _MYSQL_DEADLOCK


class Cause(Enum):
    """Why a database could not be used at start, as far as the driver's code tells."""

    MISSING_DATABASE = "missing database"
    REFUSED_USER = "refused user"  # no such user or role, a wrong password, not admitted
    NO_ACCESS = "no access"  # a known user without rights on the database
    UNREACHABLE = "unreachable"
    READ_ONLY = "read-only"
    NOT_A_DATABASE = "not a database"
    CANNOT_OPEN = "cannot open"


# SQLite's primary result codes (extended codes keep them in the low byte).
_SQLITE_CAUSES = {
    8: Cause.READ_ONLY,  # SQLITE_READONLY
    14: Cause.CANNOT_OPEN,  # SQLITE_CANTOPEN
    26: Cause.NOT_A_DATABASE,  # SQLITE_NOTADB
}
# PostgreSQL's SQLSTATEs.
_POSTGRES_CAUSES = {
    "3D000": Cause.MISSING_DATABASE,  # invalid_catalog_name
    "28000": Cause.REFUSED_USER,  # invalid_authorization_specification: no such role
    "28P01": Cause.REFUSED_USER,  # invalid_password
}
# MariaDB/MySQL's error numbers.
_MYSQL_CAUSES = {
    1049: Cause.MISSING_DATABASE,  # ER_BAD_DB_ERROR
    1045: Cause.REFUSED_USER,  # ER_ACCESS_DENIED_ERROR
    1698: Cause.REFUSED_USER,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    1044: Cause.NO_ACCESS,  # ER_DBACCESS_DENIED_ERROR
    2003: Cause.UNREACHABLE,  # CR_CONN_HOST_ERROR: PyMySQL's failed connect
}


def startup_cause(exc: BaseException | None) -> Cause | None:
    """The cause of a failure to start using a database, when the driver's code tells
    it; None otherwise (psycopg2 gives a failed connect no code at all)."""
    driver = driver_error(exc)
    sqlite_code = getattr(driver, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return _SQLITE_CAUSES.get(sqlite_code & 0xFF)
    pgcode = getattr(driver, "pgcode", None)
    if pgcode is not None:
        return _POSTGRES_CAUSES.get(pgcode)
    number = mysql_number(driver)
    return None if number is None else _MYSQL_CAUSES.get(number)
