"""A mergeable quantile sketch with bounded relative error, in constant memory.

Durations are counted in logarithmic buckets (DDSketch's scheme): any quantile it
reports is within ``RELATIVE_ACCURACY`` of a true value, and the bucket count
grows with the log of the range, not with the number of values. Its state is a
plain dict, so it round-trips through JSON with the projection it belongs to.
"""

from __future__ import annotations

import math

RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


def bucket_of(value: int) -> int:
    """Bucket key for a positive value; 0 holds values below 1 (here: under 1 µs)."""
    if value < 1:
        return 0
    return math.ceil(math.log(value) / _LOG_GAMMA) + 1


def value_of(bucket: int) -> float:
    if bucket == 0:
        return 0.0
    return 2 * _GAMMA ** (bucket - 1) / (_GAMMA + 1)


def add(buckets: dict[str, int], value: int) -> None:
    key = str(bucket_of(value))  # JSON object keys are strings
    buckets[key] = buckets.get(key, 0) + 1


def quantile(buckets: dict[str, int], q: float) -> float | None:
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for key in sorted(buckets, key=int):
        seen += buckets[key]
        if seen > rank:
            return value_of(int(key))
    return value_of(max(map(int, buckets)))
