"""Reading what a request carries, strictly: its JSON body, its query integers, its id.

One rule everywhere: what a proxy, a log reader or another parser could read
differently from us is refused, not guessed. A body is JSON in UTF-8; a key given
twice is an error (a proxy reading the first ``total_amount`` would see another
order than we book); a JSON number keeps the digits the client wrote, so money is
exact and ``1e400`` is an amount too large, not malformed JSON; a query integer is
ASCII digits, given once.

orjson reads every body first. The standard library's parser, slower but able to
see duplicate keys and keep numbers as text, reads it again only when the fast
result could hide something: more key-value separators in the text than keys in
the object, an id written as a number with a fraction or an exponent (``7.0`` is
the id 7, but only its digits say whether it is whole), or a body orjson refused.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import falcon
import orjson

from api.http.problem import Problem, bad_request
from orderlog.domain.errors import FieldError
from orderlog.domain.errors import shown as echo
from orderlog.domain.ids import random_hex
from orderlog.domain.order import MAX_IDEMPOTENCY_KEY, is_blank

JSON_TYPES = ("application/json",)
# The WSGI environ key where the server puts when a request had fully arrived
# (time.monotonic()); absent under another server.
ARRIVED = "orderlog.arrived"
UTF8 = ("utf-8", "utf8")
MAX_REQUEST_ID = 128
# Where a key ends: a closing quote, optional space, a colon. Inside strings a quote
# is escaped, so each true key-colon is matched once and a string can only add more.
_KEY_END = re.compile(rb'"\s*:')
_AMOUNT = re.compile(rb'"total_amount"\s*:\s*(-?[0-9][0-9.eE+-]*)')
_DIGITS = re.compile(r"[0-9]{1,19}\Z", re.ASCII)
_INT_DIGITS = 19  # longer integer literals are kept exact as Decimal (ids then fail range)


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def read_json(req: falcon.Request, limit: int) -> Any:
    """The request body as JSON, refusing wrong types and charsets, oversize bodies,
    bad syntax and duplicate keys. JSON numbers in the top-level object's
    ``total_amount`` arrive as exact ``Decimal``s."""
    media_type, _, params = (req.content_type or "").partition(";")
    media_type = media_type.strip().lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise _unsupported(f"send the order as application/json, not {media_type or 'no type'}")
    charset = _charset(params)
    if charset is not None and charset not in UTF8:
        raise _unsupported(f"send the body in UTF-8 (charset=utf-8), not charset={charset[:40]}")
    if req.content_length is not None and req.content_length > limit:
        raise too_large(limit)
    raw = req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise too_large(limit)
    if not raw.strip():
        raise bad_request("malformed-json", "the request body is empty")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _strict(raw)
    if isinstance(value, dict):
        if len(_KEY_END.findall(raw)) != len(value) or _has_float_id(value):
            return _strict(raw)
        amount = value.get("total_amount")
        if isinstance(amount, (int, float)) and not isinstance(amount, bool):
            literals = _AMOUNT.findall(raw)
            if len(literals) != 1:  # a key's text may hold the name too: read it strictly
                return _strict(raw)
            value["total_amount"] = Decimal(literals[0].decode())
    return value


def _has_float_id(value: dict[str, Any]) -> bool:
    """Whether an id is written as a number with a fraction or an exponent: its exact
    digits decide whether it is an integer, so it is read again with them kept."""
    items = value.get("item_ids")
    return isinstance(value.get("user_id"), float) or (
        isinstance(items, list) and any(isinstance(item, float) for item in items)
    )


def _strict(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request("malformed-json", f"the body is not UTF-8: {exc.reason}") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=Decimal,
            parse_int=_integer,
            parse_constant=_not_json,
        )
    except _DuplicateKeyError as exc:
        raise bad_request(
            "duplicate-key",
            "a key appears twice in one object",
            [FieldError(echo(exc.key), "is given more than once")],
        ) from None
    except ValueError as exc:  # json.JSONDecodeError included
        raise bad_request("malformed-json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("malformed-json", "the body nests too deeply") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _DuplicateKeyError(key)
        value[key] = item
    return value


def _integer(text: str) -> int | Decimal:
    # "-0" keeps its sign, and huge literals stay exact (int() refuses past 4,300 digits).
    if text == "-0" or len(text.lstrip("-")) > _INT_DIGITS:
        return Decimal(text)
    return int(text)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _unsupported(detail: str) -> Problem:
    return Problem(415, "unsupported-media-type", "Unsupported media type", detail)


def too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", "Payload too large", f"the body exceeds {limit} bytes")


def query_int(req: falcon.Request, name: str, default: int, low: int, high: int) -> int:
    """A query integer: ASCII digits, given once, within [low, high]."""
    raw = single_param(req, name)
    if raw is None:
        return default
    if not _DIGITS.match(raw):
        raise bad_request(
            "invalid-parameter",
            f"{name} must be an integer written in ASCII digits",
            [FieldError(name, f"{echo(raw)!r} is not an integer")],
        )
    value = int(raw)
    if not low <= value <= high:
        raise bad_request(
            "invalid-parameter",
            f"{name} is out of range",
            [FieldError(name, f"must be between {low} and {high}")],
        )
    return value


def single_param(req: falcon.Request, name: str) -> str | None:
    """A query parameter given at most once (a repeated one is refused, not guessed)."""
    value = req.params.get(name)
    if isinstance(value, list):
        raise bad_request(
            "repeated-parameter",
            f"{name} is given {len(value)} times",
            [FieldError(name, "must be given at most once")],
        )
    return value


def idempotency_key(req: falcon.Request) -> str | None:
    """The Idempotency-Key header, if any: printable, not blank, at most 255 characters."""
    key = req.get_header("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or is_blank(key):
        raise bad_request(
            "invalid-idempotency-key",
            "the Idempotency-Key header is unusable",
            [
                FieldError(
                    "Idempotency-Key",
                    f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters, not blank",
                )
            ],
        )
    return key


def request_id(req: falcon.Request) -> str:
    """The client's X-Request-ID if it is printable and short enough, else a fresh one."""
    given = req.get_header("X-Request-ID")
    if given and len(given) <= MAX_REQUEST_ID and given.isprintable() and not is_blank(given):
        return given
    return random_hex()
