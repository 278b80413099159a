"""The order's rules: pure functions from an order's history and a command to new events.

Nothing here touches the database or the clock; callers pass in what they read.
The validation of a new order lives here too, so every entry point (HTTP, scripts,
benchmarks) gets the same checks before anything is written.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

from orderlog.domain.errors import (
    FieldError,
    InvalidTransitionError,
    OrderConflictError,
    ValidationError,
    shown,
)
from orderlog.domain.events import Event, OrderCompleted, OrderPlaced, OrderProcessingStarted
from orderlog.domain.ids import new_uuid

MAX_ID_LENGTH = 64
MAX_ITEMS = 1000
# Fifteen significant digits survive a trip through a JSON float unchanged, so every
# amount up to this bound is exact however the client wrote it.
MAX_AMOUNT = Decimal("9999999999999.99")
MAX_INT_ID = 2**63 - 1
CENT = Decimal("0.01")
# \Z, not $: $ also matches before a trailing newline.
ORDER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")
# Plain ASCII decimal notation: no whitespace, no exponent, no sign but a leading "-"
# (which then fails as negative). Decimal() alone would also take " 1", "+1",
# "1_000", "1e2" and digits of other scripts; without an exponent, what is accepted
# is a regular language that the OpenAPI document can state exactly.
DECIMAL_TEXT = re.compile(r"-?(?:\d+\.?\d*|\.\d+)", re.ASCII)
PLACE_ORDER_FIELDS = ("order_id", "user_id", "item_ids", "total_amount", "currency")
OPTIONAL_FIELDS = ("order_id", "currency")
# ISO 4217's shape: three upper-case ASCII letters. Whether the code is assigned is the
# client's business (the list changes); "usd", "EURO" and "" are refused.
CURRENCY_CODE = re.compile(r"[A-Z]{3}", re.ASCII)
CURRENCY_RULE = "must be an ISO 4217 currency code: three upper-case letters A-Z, such as EUR"
# The currency of an order placed without one, unless the caller passes its own (the
# --default-currency setting). Orders stored before orders had one read as USD always.
DEFAULT_CURRENCY = "USD"
# Letters and symbols drawn as nothing: the four Hangul fillers (the only letters
# among Unicode's default-ignorable code points) and the blank Braille pattern.
INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")


class Status(StrEnum):
    PENDING = "Pending"
    PROCESSING = "Processing"
    COMPLETED = "Completed"


@dataclass(frozen=True)
class PlaceOrder:
    order_id: str
    user_id: str | int
    item_ids: tuple[str | int, ...]
    total_amount: Decimal
    # False when the client named no order: the id is made here (a UUID), and an
    # Idempotency-Key then names the order instead (``orderlog.service``).
    id_given: bool = True
    currency: str = DEFAULT_CURRENCY  # ISO 4217

    @classmethod
    def from_payload(cls, payload: Any, *, default_currency: str = DEFAULT_CURRENCY) -> PlaceOrder:
        """Validate a decoded request body; raises ValidationError listing every bad field.

        ``currency`` is optional: an order without one is in ``default_currency``.
        """
        if not isinstance(payload, Mapping):
            raise ValidationError([FieldError("body", "must be a JSON object")])
        errors: list[FieldError] = [
            FieldError(shown(str(name)), "unknown field")
            for name in payload
            if name not in PLACE_ORDER_FIELDS
        ]
        for name in PLACE_ORDER_FIELDS:
            if name not in payload and name not in OPTIONAL_FIELDS:
                errors.append(FieldError(name, "is required"))

        order_id = payload.get("order_id")
        id_given = "order_id" in payload
        if not id_given:
            order_id = new_uuid()
        else:
            _check_order_id(order_id, errors)
        user_id = integral(payload.get("user_id"))
        if "user_id" in payload:
            _check_id("user_id", user_id, errors)
        item_ids = payload.get("item_ids")
        if isinstance(item_ids, list):
            item_ids = [integral(item) for item in item_ids]
        if "item_ids" in payload:
            _check_items(item_ids, errors)
        amount = None
        if "total_amount" in payload:
            amount = parse_amount(payload["total_amount"], errors)
        currency = payload.get("currency", default_currency)
        if not is_currency(currency):
            errors.append(FieldError("currency", CURRENCY_RULE))
        if errors:
            raise ValidationError(errors)
        items = tuple(item_ids)  # type: ignore[arg-type]
        return cls(order_id, user_id, items, amount, id_given, currency)  # type: ignore[arg-type]


def is_currency(value: Any) -> bool:
    """Whether ``value`` is a currency code as orders take it (``CURRENCY_CODE``)."""
    return isinstance(value, str) and CURRENCY_CODE.fullmatch(value) is not None


MAX_IDEMPOTENCY_KEY = 255


def idempotent_order_id(key: str, client: str = "") -> str:
    """The order id for an order placed with an idempotency key (and no id of its own).

    Derived from the key and the client (the token's name), so a retry with the same
    key lands on the same stream, where the version check makes the second placing a
    no-op or a conflict, on every node and after any restart; and two clients' keys
    never meet. 32 characters of the order id alphabet.
    """
    digest = hashlib.sha256(f"{client}\0{key}".encode()).digest()
    return "k" + base64.b32encode(digest).decode().lower()[:31]


def is_order_id(value: str) -> bool:
    """Whether an order could have this id; one that cannot names no order."""
    return len(value) <= MAX_ID_LENGTH and bool(ORDER_ID_PATTERN.match(value))


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: it holds no letter, number, punctuation or
    symbol (Unicode categories L, N, P, S) but those in INVISIBLE.

    So spaces and separators (Z), controls and format characters (C) and combining
    marks (M) alone are blank, and so is every default-ignorable code point; a mark
    after a letter (e + U+0301) is not. One rule for every id and key.
    """
    if text.isascii():  # the common case, at C speed: only spaces and controls are blank
        return not text.strip(_ASCII_BLANK)
    return not any(
        unicodedata.category(char)[0] in "LNPS" and char not in INVISIBLE for char in text
    )


# ASCII's blank characters: the controls, space and DEL (categories Cc and Zs).
_ASCII_BLANK = "".join(map(chr, range(0x21))) + "\x7f"


def integral(value: Any) -> Any:
    """An id written as an integral number (``7.0``, ``7e0``) is the integer 7, as JSON
    Schema's ``integer`` says; only exact values count (a Decimal from the HTTP
    layer's literal, or a float small enough to be exact). Anything else is returned
    as it is, for the checks to judge."""
    if isinstance(value, Decimal):
        if value.is_finite() and value.adjusted() < 20 and value == value.to_integral_value():
            return int(value)
    elif isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def _check_order_id(value: Any, errors: list[FieldError]) -> None:
    if not isinstance(value, str):
        errors.append(FieldError("order_id", "must be a string"))
    elif not 1 <= len(value) <= MAX_ID_LENGTH:
        errors.append(FieldError("order_id", f"must be 1 to {MAX_ID_LENGTH} characters"))
    elif not ORDER_ID_PATTERN.match(value):
        errors.append(
            FieldError(
                "order_id",
                "may hold only letters, digits and _ . : - and must start with a letter or digit",
            )
        )


def _check_id(name: str, value: Any, errors: list[FieldError]) -> None:
    # bool is an int in Python; true/false is never a meaningful id.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors.append(FieldError(name, "must be a string or an integer"))
    elif isinstance(value, str) and not 1 <= len(value) <= MAX_ID_LENGTH:
        errors.append(FieldError(name, f"must be 1 to {MAX_ID_LENGTH} characters"))
    elif isinstance(value, str) and not value.isprintable():
        # Control characters rewrite terminals and logs; format characters such as
        # bidi overrides make one id look like another.
        errors.append(FieldError(name, "must hold only printable characters"))
    elif isinstance(value, str) and is_blank(value):
        # Hangul fillers, blank Braille and lone combining marks look like no id at all.
        errors.append(
            FieldError(name, "must not be blank: needs a letter, digit, punctuation or symbol")
        )
    elif isinstance(value, int) and not 0 <= value <= MAX_INT_ID:
        errors.append(FieldError(name, f"must be between 0 and {MAX_INT_ID}"))


def _check_items(value: Any, errors: list[FieldError]) -> None:
    if not isinstance(value, list):
        errors.append(FieldError("item_ids", "must be a list of item ids"))
        return
    if not 1 <= len(value) <= MAX_ITEMS:
        errors.append(FieldError("item_ids", f"must hold 1 to {MAX_ITEMS} items"))
        return
    for index, item in enumerate(value):
        before = len(errors)
        _check_id(f"item_ids[{index}]", item, errors)
        if len(errors) > before:
            return  # one bad item is enough to say; a thousand lines would not help


def parse_amount(value: Any, errors: list[FieldError]) -> Decimal | None:
    """An exact, non-negative amount with at most two decimal places.

    A JSON number arrives as the Decimal of the digits the client wrote (the HTTP
    layer keeps them), a string must be plain ASCII decimal notation. A float (from
    other callers) is read through its shortest repr, which is the literal written
    for every amount within MAX_AMOUNT.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        errors.append(FieldError("total_amount", "must be a number or a decimal string"))
        return None
    if isinstance(value, str) and not DECIMAL_TEXT.fullmatch(value):
        errors.append(
            FieldError(
                "total_amount",
                f"{shown(value, 40)!r} is not plain decimal notation "
                "(ASCII digits and at most one point; no sign, exponent or spaces)",
            )
        )
        return None
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(FieldError("total_amount", "must be a finite number"))
        return None
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite():
        errors.append(FieldError("total_amount", "must be a finite number"))
    elif amount.is_signed():  # "-0" and "-0.00" too: a sign is never part of a price
        errors.append(FieldError("total_amount", "must not be negative"))
    elif amount > MAX_AMOUNT:
        errors.append(FieldError("total_amount", f"must not exceed {MAX_AMOUNT}"))
    elif amount != amount.quantize(CENT):
        errors.append(FieldError("total_amount", "must have at most 2 decimal places"))
    else:
        return amount.quantize(CENT)
    return None


class OrderState(NamedTuple):
    """The write side's view of one order: just what the rules need to decide, and what
    the order's next event names as its causes. Immutable; a named tuple, built in a
    third of a frozen dataclass's time, as every command and claim builds a few."""

    version: int = 0
    status: Status | None = None
    placed: OrderPlaced | None = None
    attempt: int = 0
    worker_id: str | None = None
    # From the recorded events' metadata: the stream's last event (its event_id, which
    # the next event names as its causation_id; None when folded from bare events), and
    # the id of the request that placed the order, which every later event carries on.
    last_event_id: str | None = None
    correlation_id: str | None = None


# Each handler: (state, event, the event's id, the correlation id) -> the next state.
def _placed(
    state: OrderState, event: OrderPlaced, event_id: str | None, correlation: str | None
) -> OrderState:
    return OrderState(state.version + 1, Status.PENDING, event, 0, None, event_id, correlation)


def _started(
    state: OrderState, event: OrderProcessingStarted, event_id: str | None, correlation: str | None
) -> OrderState:
    return OrderState(
        state.version + 1,
        Status.PROCESSING,
        state.placed,
        event.attempt,
        event.worker_id,
        event_id,
        correlation,
    )


def _completed(
    state: OrderState, event: OrderCompleted, event_id: str | None, correlation: str | None
) -> OrderState:
    return _next(state, Status.COMPLETED, event_id, correlation)


def _moved(
    state: OrderState, event: object, event_id: str | None, correlation: str | None
) -> OrderState:
    # A type this version does not know still takes its place in the stream.
    return _next(state, state.status, event_id, correlation)


def _next(
    state: OrderState, status: Status | None, event_id: str | None, correlation: str | None
) -> OrderState:
    """One event further, in ``status``; the claim as it was."""
    return OrderState(
        state.version + 1,
        status,
        state.placed,
        state.attempt,
        state.worker_id,
        event_id,
        correlation,
    )


_HANDLERS: dict[type, Callable[[OrderState, Any, str | None, str | None], OrderState]] = {
    OrderPlaced: _placed,
    OrderProcessingStarted: _started,
    OrderCompleted: _completed,
}


def apply_state(
    state: OrderState, event: Event | None, metadata: Mapping[str, Any] | None = None
) -> OrderState:
    """The state after one more event of the order's stream (None: a type unknown here).

    ``metadata`` is the recorded event's: its event_id becomes the state's last_event_id
    and its correlation_id, if it has one, the state's. Without it the last event is
    unknown, so the next one names no cause.
    """
    handler = _HANDLERS.get(type(event), _moved)
    if metadata is None:
        return handler(state, event, None, state.correlation_id)
    correlation = metadata.get("correlation_id", state.correlation_id)
    return handler(state, event, metadata.get("event_id"), correlation)


def fold_state(events: Iterable[Event | None]) -> OrderState:
    state = OrderState()
    for event in events:
        state = apply_state(state, event)
    return state


def place_order(state: OrderState, command: PlaceOrder) -> list[Event]:
    """The events for a new order; none for an identical retry; conflict otherwise."""
    placed = OrderPlaced(
        order_id=command.order_id,
        user_id=command.user_id,
        item_ids=command.item_ids,
        total_amount=str(command.total_amount),
        currency=command.currency,
    )
    if state.placed is None:
        return [placed]
    if state.placed == placed:
        return []
    raise OrderConflictError(command.order_id)


def start_processing(state: OrderState, order_id: str, worker_id: str) -> list[Event]:
    """Claim the order. From Processing this is a re-claim after a crash or an expired lease."""
    if state.status not in (Status.PENDING, Status.PROCESSING):
        raise InvalidTransitionError(
            f"order {order_id!r} is {_status_name(state)}: processing cannot start"
        )
    return [OrderProcessingStarted(order_id, state.attempt + 1, worker_id)]


def complete_order(state: OrderState, order_id: str) -> list[Event]:
    if state.status is not Status.PROCESSING:
        raise InvalidTransitionError(
            f"order {order_id!r} is {_status_name(state)}: only a Processing order completes"
        )
    return [OrderCompleted(order_id, state.attempt)]


def _status_name(state: OrderState) -> str:
    return state.status.value if state.status else "not placed"
