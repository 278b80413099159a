"""Event versions: the schema version each event type is written at now, and the
upcasters that bring an event stored at an older version up to it.

A stored event keeps the version it was written at (no stored row is ever
rewritten; absent means 1). Every read goes through ``upcast``, which runs the chain
``n -> n+1`` up to the current version, so the rest of the code sees the current
shape only. Writes always use the current version. An event stored at a version
newer than this code knows cannot be read: ``FutureEventError``. Pure: the standard
library only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orderlog.domain.errors import FutureEventError

Data = dict[str, Any]
Upcaster = Callable[[Data], Data]

# What the fixed v1 -> v2 upcaster gives an order placed before orders had one: the
# currency every order was in then. Never a setting: no setting may rewrite history,
# and no two nodes may disagree about the past.
V1_CURRENCY = "USD"


def _order_placed_v1_to_v2(data: Data) -> Data:
    """OrderPlaced v2 carries the order's ``currency`` (ISO 4217); v1 never had one."""
    return {"currency": V1_CURRENCY, **data}


# type -> the version it is written at now.
CURRENT_VERSIONS: Mapping[str, int] = {
    "OrderPlaced": 2,
    "OrderProcessingStarted": 1,
    "OrderCompleted": 1,
}

# (type, n) -> the function from version n to n + 1.
UPCASTERS: Mapping[tuple[str, int], Upcaster] = {
    ("OrderPlaced", 1): _order_placed_v1_to_v2,
}


def current_version(type_name: str) -> int:
    """The version new events of ``type_name`` are written at (1 for a type unknown here)."""
    return CURRENT_VERSIONS.get(type_name, 1)


def upcast(type_name: str, version: int, data: Data) -> Data:
    """``data`` stored at ``version``, as the current version of its type.

    A type this code does not know passes as it is (readers skip it); a version newer
    than the current one raises FutureEventError.
    """
    current = CURRENT_VERSIONS.get(type_name)
    if current is None or version == current:
        return data
    if version > current:
        raise FutureEventError(type_name, version, current)
    while version < current:
        data = UPCASTERS[(type_name, version)](data)
        version += 1
    return data


def missing_upcasters(
    versions: Mapping[str, int] = CURRENT_VERSIONS,
    upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS,
) -> list[str]:
    """Each ``type vN -> vN+1`` the chains lack (empty when every type can be read from
    version 1 up to its current one), and each upcaster no chain uses."""
    gaps = [
        f"{name} v{n} -> v{n + 1}"
        for name, current in versions.items()
        for n in range(1, current)
        if (name, n) not in upcasters
    ]
    stray = [
        f"{name} v{n} -> v{n + 1} (not below its current version)"
        for name, n in upcasters
        if not 1 <= n < versions.get(name, 1)
    ]
    return gaps + stray
