"""The order's rules and the new-order validation: plain lists of events, no database."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from orderlog.domain.errors import InvalidTransitionError, OrderConflictError, ValidationError
from orderlog.domain.events import Event, OrderCompleted, OrderPlaced, OrderProcessingStarted
from orderlog.domain.order import (
    MAX_AMOUNT,
    MAX_ID_LENGTH,
    MAX_INT_ID,
    MAX_ITEMS,
    OrderState,
    PlaceOrder,
    Status,
    apply_state,
    complete_order,
    fold_state,
    place_order,
    start_processing,
)

VALID: dict[str, Any] = {
    "order_id": "o-1",
    "user_id": "u-1",
    "item_ids": ["sku-1", 42],
    "total_amount": "19.99",
}


def payload(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def without(name: str) -> dict[str, Any]:
    return {key: value for key, value in VALID.items() if key != name}


def command(**changes: Any) -> PlaceOrder:
    return PlaceOrder.from_payload(payload(**changes))


def placed(order_id: str = "o-1") -> OrderPlaced:
    return OrderPlaced(order_id, "u-1", ("sku-1", 42), "19.99")


def state_of(*events: Event | None) -> OrderState:
    return fold_state(events)


PENDING = [placed()]
PROCESSING = [*PENDING, OrderProcessingStarted("o-1", 1, "w1")]
COMPLETED = [*PROCESSING, OrderCompleted("o-1", 1)]


# -- placing ------------------------------------------------------------------------


def test_placing_a_new_order_records_one_order_placed() -> None:
    assert place_order(state_of(), command()) == [placed()]


def test_identical_retry_records_nothing() -> None:
    assert place_order(state_of(*PENDING), command()) == []


def test_identical_retry_after_completion_records_nothing() -> None:
    assert place_order(state_of(*COMPLETED), command()) == []


def test_same_amount_written_another_way_is_an_identical_retry() -> None:
    for amount in (19.99, "19.990", Decimal("1999e-2")):
        assert place_order(state_of(*PENDING), command(total_amount=amount)) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"user_id": "u-2"},
        {"item_ids": ["sku-1"]},
        {"item_ids": [42, "sku-1"]},
        {"total_amount": 20},
        {"currency": "EUR"},
    ],
    ids=["user", "items", "item-order", "amount", "currency"],
)
def test_same_id_with_different_content_raises_conflict(changes: dict[str, Any]) -> None:
    with pytest.raises(OrderConflictError) as caught:
        place_order(state_of(*PENDING), command(**changes))
    assert caught.value.order_id == "o-1"


def test_a_retry_in_the_same_currency_is_the_same_order_whatever_the_default() -> None:
    in_euros = PlaceOrder.from_payload(payload(currency="EUR"))
    euros_by_default = PlaceOrder.from_payload(payload(), default_currency="EUR")
    placed_in_euros = place_order(state_of(), in_euros)
    assert place_order(state_of(*placed_in_euros), euros_by_default) == []
    with pytest.raises(OrderConflictError):  # the same body, where the default is USD
        place_order(state_of(*placed_in_euros), command())


def test_integer_and_string_ids_are_different_content() -> None:
    with pytest.raises(OrderConflictError):
        place_order(state_of(*PENDING), command(item_ids=["sku-1", "42"]))


# -- processing and completion ---------------------------------------------------------


def test_processing_starts_from_pending_as_attempt_one() -> None:
    assert start_processing(state_of(*PENDING), "o-1", "w1") == [
        OrderProcessingStarted("o-1", 1, "w1")
    ]


def test_reclaiming_a_processing_order_raises_the_attempt() -> None:
    first = start_processing(state_of(*PENDING), "o-1", "w1")
    second = start_processing(state_of(*PENDING, *first), "o-1", "w2")
    third = start_processing(state_of(*PENDING, *first, *second), "o-1", "w3")
    assert second == [OrderProcessingStarted("o-1", 2, "w2")]
    assert third == [OrderProcessingStarted("o-1", 3, "w3")]


@pytest.mark.parametrize("history", [[], COMPLETED], ids=["not-placed", "completed"])
def test_processing_cannot_start_unless_pending_or_processing(history: list[Event]) -> None:
    with pytest.raises(InvalidTransitionError, match="o-1"):
        start_processing(state_of(*history), "o-1", "w1")


def test_a_processing_order_completes_with_its_current_attempt() -> None:
    history = [*PROCESSING, OrderProcessingStarted("o-1", 2, "w2")]
    assert complete_order(state_of(*history), "o-1") == [OrderCompleted("o-1", 2)]


@pytest.mark.parametrize(
    "history", [[], PENDING, COMPLETED], ids=["not-placed", "pending", "completed"]
)
def test_only_a_processing_order_completes(history: list[Event]) -> None:
    with pytest.raises(InvalidTransitionError, match="o-1"):
        complete_order(state_of(*history), "o-1")


def test_folded_state_follows_status_version_and_claim() -> None:
    assert state_of() == OrderState()
    pending = state_of(*PENDING)
    assert (pending.status, pending.version, pending.placed) == (Status.PENDING, 1, placed())
    processing = state_of(*PROCESSING)
    assert (processing.status, processing.version, processing.attempt) == (Status.PROCESSING, 2, 1)
    assert processing.worker_id == "w1"
    completed = state_of(*COMPLETED)
    assert (completed.status, completed.version, completed.placed) == (
        Status.COMPLETED,
        3,
        placed(),
    )


def test_an_unknown_event_takes_a_version_and_changes_nothing_else() -> None:
    before = state_of(*PROCESSING)
    after = state_of(*PROCESSING, None)
    assert after.version == before.version + 1
    assert (after.status, after.placed, after.attempt, after.worker_id) == (
        before.status,
        before.placed,
        before.attempt,
        before.worker_id,
    )
    # The next claim is decided on the right version and attempt.
    assert start_processing(after, "o-1", "w2") == [OrderProcessingStarted("o-1", 2, "w2")]


def test_the_state_knows_the_last_event_and_the_correlation_from_the_metadata() -> None:
    # The placing request's id lives in OrderPlaced's metadata; a later event without one
    # (written before events carried it on) keeps it.
    pending = apply_state(OrderState(), placed(), {"event_id": "e1", "correlation_id": "req-1"})
    assert (pending.last_event_id, pending.correlation_id) == ("e1", "req-1")
    claimed = apply_state(pending, PROCESSING[1], {"event_id": "e2"})
    assert (claimed.last_event_id, claimed.correlation_id) == ("e2", "req-1")
    unknown = apply_state(claimed, None, {"event_id": "e3", "correlation_id": "req-1"})
    assert (unknown.last_event_id, unknown.correlation_id) == ("e3", "req-1")


def test_an_event_folded_without_its_metadata_leaves_the_last_event_unknown() -> None:
    pending = apply_state(OrderState(), placed(), {"event_id": "e1", "correlation_id": "req-1"})
    claimed = apply_state(pending, PROCESSING[1])
    # Never the id of an older event: the next event would name the wrong cause.
    assert (claimed.last_event_id, claimed.correlation_id) == (None, "req-1")


# -- validating a new order ------------------------------------------------------------


def test_a_valid_payload_becomes_a_command_with_an_exact_amount() -> None:
    assert command() == PlaceOrder("o-1", "u-1", ("sku-1", 42), Decimal("19.99"))


def test_a_currency_is_kept_and_an_omitted_one_is_the_callers_default() -> None:
    assert command(currency="EUR").currency == "EUR"
    assert command().currency == "USD"
    assert PlaceOrder.from_payload(payload(), default_currency="JPY").currency == "JPY"
    assert PlaceOrder.from_payload(payload(currency="CHF"), default_currency="JPY").currency == (
        "CHF"
    )
    assert place_order(state_of(), command(currency="GBP"))[0].currency == "GBP"


def test_an_omitted_order_id_is_generated() -> None:
    first = PlaceOrder.from_payload(without("order_id"))
    second = PlaceOrder.from_payload(without("order_id"))
    assert uuid.UUID(first.order_id)
    assert first.order_id != second.order_id


@pytest.mark.parametrize(
    ("amount", "exact"),
    [
        ("19.99", "19.99"),
        (19.99, "19.99"),
        (0.3, "0.30"),
        ("19.9", "19.90"),
        (5, "5.00"),
        ("0", "0.00"),
        (0, "0.00"),
        (Decimal("19.99"), "19.99"),
        (Decimal("1E+2"), "100.00"),
        ("1234567890123.45", "1234567890123.45"),
        (1234567890123.45, "1234567890123.45"),
        (str(MAX_AMOUNT), str(MAX_AMOUNT)),
        (float(MAX_AMOUNT), str(MAX_AMOUNT)),
        ("1.50", "1.50"),
        ("0001.5", "1.50"),
        (".5", "0.50"),
    ],
)
def test_amounts_are_kept_exact_to_the_cent(amount: Any, exact: str) -> None:
    assert str(command(total_amount=amount).total_amount) == exact


@pytest.mark.parametrize(
    "changes",
    [
        {"order_id": "a" * MAX_ID_LENGTH},
        {"order_id": "A.b:c-d_9"},
        {"user_id": 0},
        {"user_id": MAX_INT_ID},
        {"user_id": "u" * MAX_ID_LENGTH},
        {"item_ids": ["i"] * MAX_ITEMS},
        {"item_ids": [0, "x" * MAX_ID_LENGTH, MAX_INT_ID]},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_values_at_the_limits_are_accepted(changes: dict[str, Any]) -> None:
    PlaceOrder.from_payload(payload(**changes))


@pytest.mark.parametrize(
    "text",
    ["e\u0301", "\u0915\u093e", "\u3164a", "a\u2800b", "\u2801", "\u00e9", "-", "\u20ac"],
    ids=["e-acute-decomposed", "ka-aa", "filler-then-letter", "braille-blank-inside",
         "braille-dot", "e-acute", "punctuation", "symbol"],
)  # fmt: skip
def test_an_id_with_a_letter_number_punctuation_or_symbol_is_not_blank(text: str) -> None:
    placed = PlaceOrder.from_payload(payload(user_id=text, item_ids=[text]))
    assert (placed.user_id, placed.item_ids) == (text, (text,))


INVALID: list[tuple[str, Any, str]] = [
    # (case id, payload, the field the error must name)
    ("body-list", [], "body"),
    ("body-string", "order", "body"),
    ("body-number", 1, "body"),
    ("body-null", None, "body"),
    ("missing-user_id", without("user_id"), "user_id"),
    ("missing-item_ids", without("item_ids"), "item_ids"),
    ("missing-total_amount", without("total_amount"), "total_amount"),
    ("unknown-field", payload(note="hi"), "note"),
    ("user_id-true", payload(user_id=True), "user_id"),
    ("user_id-false", payload(user_id=False), "user_id"),
    ("user_id-float", payload(user_id=1.5), "user_id"),
    ("user_id-list", payload(user_id=["u"]), "user_id"),
    ("user_id-object", payload(user_id={"id": 1}), "user_id"),
    ("user_id-null", payload(user_id=None), "user_id"),
    ("user_id-empty", payload(user_id=""), "user_id"),
    ("user_id-too-long", payload(user_id="u" * (MAX_ID_LENGTH + 1)), "user_id"),
    ("user_id-negative", payload(user_id=-1), "user_id"),
    ("user_id-too-big", payload(user_id=MAX_INT_ID + 1), "user_id"),
    ("user_id-hangul-filler", payload(user_id="\u3164"), "user_id"),
    ("user_id-hangul-choseong-filler", payload(user_id="\u115f"), "user_id"),
    ("user_id-hangul-jungseong-filler", payload(user_id="\u1160"), "user_id"),
    ("user_id-halfwidth-hangul-filler", payload(user_id="\uffa0"), "user_id"),
    ("user_id-braille-blank", payload(user_id="\u2800\u2800"), "user_id"),
    ("user_id-lone-combining-mark", payload(user_id="\u0301"), "user_id"),
    ("user_id-enclosing-mark", payload(user_id="\u20dd"), "user_id"),
    ("user_id-spacing-mark", payload(user_id="\u093e"), "user_id"),
    ("user_id-khmer-inherent-vowel", payload(user_id="\u17b4"), "user_id"),
    ("user_id-variation-selector", payload(user_id="\ufe0f"), "user_id"),
    ("user_id-marks-and-fillers", payload(user_id=" \u0301\u3164 \u2800"), "user_id"),
    ("item_ids-string", payload(item_ids="sku-1"), "item_ids"),
    ("item_ids-object", payload(item_ids={"0": "sku-1"}), "item_ids"),
    ("item_ids-null", payload(item_ids=None), "item_ids"),
    ("item_ids-empty", payload(item_ids=[]), "item_ids"),
    ("item_ids-too-many", payload(item_ids=["i"] * (MAX_ITEMS + 1)), "item_ids"),
    ("item-bool", payload(item_ids=[True]), "item_ids[0]"),
    ("item-float", payload(item_ids=["a", 1.5]), "item_ids[1]"),
    ("item-null", payload(item_ids=[None]), "item_ids[0]"),
    ("item-list", payload(item_ids=[["a"]]), "item_ids[0]"),
    ("item-empty", payload(item_ids=[""]), "item_ids[0]"),
    ("item-too-long", payload(item_ids=["a", "b", "x" * (MAX_ID_LENGTH + 1)]), "item_ids[2]"),
    ("item-negative", payload(item_ids=[-1]), "item_ids[0]"),
    ("item-hangul-filler", payload(item_ids=["sku-1", "\u3164"]), "item_ids[1]"),
    ("item-braille-blank", payload(item_ids=["\u2800"]), "item_ids[0]"),
    ("item-lone-combining-mark", payload(item_ids=["\u0301\u0301"]), "item_ids[0]"),
    ("order_id-int", payload(order_id=7), "order_id"),
    ("order_id-null", payload(order_id=None), "order_id"),
    ("order_id-bool", payload(order_id=True), "order_id"),
    ("order_id-list", payload(order_id=["o"]), "order_id"),
    ("order_id-empty", payload(order_id=""), "order_id"),
    ("order_id-too-long", payload(order_id="o" * (MAX_ID_LENGTH + 1)), "order_id"),
    ("order_id-slash", payload(order_id="a/b"), "order_id"),
    ("order_id-space", payload(order_id="a b"), "order_id"),
    ("order_id-leading-dash", payload(order_id="-a"), "order_id"),
    ("order_id-trailing-newline", payload(order_id="abc\n"), "order_id"),
    ("order_id-non-ascii", payload(order_id="café"), "order_id"),
    ("amount-true", payload(total_amount=True), "total_amount"),
    ("amount-null", payload(total_amount=None), "total_amount"),
    ("amount-list", payload(total_amount=[1]), "total_amount"),
    ("amount-object", payload(total_amount={"value": 1}), "total_amount"),
    ("amount-abc", payload(total_amount="abc"), "total_amount"),
    ("amount-empty", payload(total_amount=""), "total_amount"),
    ("amount-NaN", payload(total_amount="NaN"), "total_amount"),
    ("amount-sNaN", payload(total_amount="sNaN"), "total_amount"),
    ("amount-Infinity", payload(total_amount="Infinity"), "total_amount"),
    ("amount-minus-Infinity", payload(total_amount="-Infinity"), "total_amount"),
    ("amount-float-inf", payload(total_amount=float("inf")), "total_amount"),
    ("amount-float-nan", payload(total_amount=float("nan")), "total_amount"),
    ("amount-1e400", payload(total_amount="1e400"), "total_amount"),
    ("amount-minus-one", payload(total_amount=-1), "total_amount"),
    ("amount-minus-cent", payload(total_amount="-0.01"), "total_amount"),
    ("amount-minus-zero-text", payload(total_amount="-0"), "total_amount"),
    ("amount-minus-zero-cents", payload(total_amount="-0.00"), "total_amount"),
    ("amount-minus-zero-float", payload(total_amount=-0.0), "total_amount"),
    ("amount-minus-zero-number", payload(total_amount=Decimal("-0")), "total_amount"),
    ("amount-plus-sign", payload(total_amount="+1.00"), "total_amount"),
    ("amount-spaces", payload(total_amount=" 1.00 "), "total_amount"),
    ("amount-exponent-text", payload(total_amount="1e2"), "total_amount"),
    ("amount-dot-only", payload(total_amount="."), "total_amount"),
    ("amount-number-too-large", payload(total_amount=Decimal("1e400")), "total_amount"),
    ("amount-number-too-small", payload(total_amount=Decimal("1e-400")), "total_amount"),
    ("amount-three-places-number", payload(total_amount=1.001), "total_amount"),
    ("amount-three-places-string", payload(total_amount="1.001"), "total_amount"),
    ("amount-float-noise", payload(total_amount=0.1 + 0.2), "total_amount"),
    ("amount-too-large-string", payload(total_amount="10000000000000"), "total_amount"),
    ("amount-too-large-number", payload(total_amount=10000000000000.0), "total_amount"),
    ("amount-too-large-int", payload(total_amount=10**20), "total_amount"),
    ("amount-underscores", payload(total_amount="1_000"), "total_amount"),
    ("amount-non-ascii-digits", payload(total_amount="١٢"), "total_amount"),
    ("amount-hex", payload(total_amount="0x10"), "total_amount"),
    ("currency-lower-case", payload(currency="usd"), "currency"),
    ("currency-mixed-case", payload(currency="Usd"), "currency"),
    ("currency-four-letters", payload(currency="EURO"), "currency"),
    ("currency-two-letters", payload(currency="EU"), "currency"),
    ("currency-empty", payload(currency=""), "currency"),
    ("currency-number", payload(currency=12), "currency"),
    ("currency-null", payload(currency=None), "currency"),
    ("currency-list", payload(currency=["EUR"]), "currency"),
    ("currency-digits", payload(currency="978"), "currency"),
    ("currency-space", payload(currency="EUR "), "currency"),
    ("currency-newline", payload(currency="EUR\n"), "currency"),
    ("currency-fullwidth", payload(currency="\uff25\uff35\uff32"), "currency"),
    ("currency-accented", payload(currency="\u00c9UR"), "currency"),
]


@pytest.mark.parametrize(
    ("body", "field"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_payload_is_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PlaceOrder.from_payload(body)
    assert field in [error.field for error in caught.value.errors]
    assert all(error.message for error in caught.value.errors)
    assert field in str(caught.value)


def test_every_bad_field_is_listed_at_once() -> None:
    body = {"order_id": "a b", "user_id": None, "item_ids": [], "total_amount": "x", "extra": 1}
    with pytest.raises(ValidationError) as caught:
        PlaceOrder.from_payload(body)
    fields = sorted(error.field for error in caught.value.errors)
    assert fields == ["extra", "item_ids", "order_id", "total_amount", "user_id"]


def test_one_bad_item_among_many_is_reported_once() -> None:
    with pytest.raises(ValidationError) as caught:
        PlaceOrder.from_payload(payload(item_ids=[None] * MAX_ITEMS))
    assert [error.field for error in caught.value.errors] == ["item_ids[0]"]


def test_blankness_of_ascii_text_follows_the_unicode_category_rule() -> None:
    # ASCII takes a short cut; it must say what the rule says for every character.
    import unicodedata

    from orderlog.domain.order import INVISIBLE, is_blank

    def by_rule(text: str) -> bool:
        return not any(unicodedata.category(c)[0] in "LNPS" and c not in INVISIBLE for c in text)

    texts = [chr(code) for code in range(128)] + [" ", " a ", "\t\n", "  -", "\x7f ", "sku-1"]
    assert [is_blank(t) for t in texts] == [by_rule(t) for t in texts]


def test_an_order_state_cannot_be_changed_in_place() -> None:
    state = OrderState(2, Status.PROCESSING, None, 1, "w/1/0")
    with pytest.raises(AttributeError):
        state.version = 3  # type: ignore[misc]
    assert state == OrderState(2, Status.PROCESSING, None, 1, "w/1/0")
    assert state != OrderState(3, Status.PROCESSING, None, 1, "w/1/0")
