"""A mergeable quantile sketch with bounded relative error, in constant memory.

Durations are counted in logarithmic buckets (DDSketch's scheme): any quantile it
reports is within ``RELATIVE_ACCURACY`` of a true value, and the bucket count
grows with the log of the range, not with the number of values. Its state is a
plain dict, so it round-trips through JSON with the projection it belongs to.
0.1% tells apart durations that differ by a fraction of a millisecond at a few
hundred milliseconds, where simulated work of a fixed length puts most orders;
six decades of range take at most some 6,900 buckets.
"""

from __future__ import annotations

import math

RELATIVE_ACCURACY = 0.001
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


def bucket_of(value: float) -> int:
    """Bucket key for a positive value; 0 holds values below 1 (here: under 1 µs)."""
    if value < 1:
        return 0
    return math.ceil(math.log(value) / _LOG_GAMMA) + 1


def value_of(bucket: int, gamma: float = _GAMMA) -> float:
    if bucket == 0:
        return 0.0
    return 2 * gamma ** (bucket - 1) / (gamma + 1)


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


def rescale(buckets: dict[str, int], accuracy: float) -> dict[str, int]:
    """Buckets kept at another ``accuracy``, counted again at this module's: each value
    as its old bucket's middle, so within the two accuracies together."""
    gamma = (1 + accuracy) / (1 - accuracy)
    rescaled: dict[str, int] = {}
    for key, count in buckets.items():
        new = str(bucket_of(value_of(int(key), gamma)))
        rescaled[new] = rescaled.get(new, 0) + count
    return rescaled


def histogram(buckets: dict[str, int], bars: int = 16) -> list[tuple[int, int, int]]:
    """(from, to, count) of the values, in bars of one round width (1, 2 or 5 times a
    power of ten, at least 1) from the smallest value up to the 99th percentile, and one
    more bar for any beyond, up to the largest: the bars resolve where most values are,
    whatever a few outliers do. A bar is never narrower than a bucket at the 99th
    percentile, so no bar stays empty only because the sketch cannot tell values apart.
    """
    if not buckets:
        return []
    keyed = sorted((int(key), count) for key, count in buckets.items())
    low, high = value_of(keyed[0][0]), quantile(buckets, 0.99) or 0.0
    width = _round_width(max((high - low) / bars, high * (_GAMMA - 1), 1.0))
    start = math.floor(low / width) * width
    shown = int((high - start) // width) + 1  # bars up to the one that holds the 99th
    counts = [0] * shown
    beyond = 0
    for key, count in keyed:
        bar = int((value_of(key) - start) // width)
        if bar < shown:
            counts[bar] += count
        else:
            beyond += count
    result = [(start + i * width, start + (i + 1) * width, n) for i, n in enumerate(counts)]
    if beyond:
        result.append((start + shown * width, math.ceil(value_of(keyed[-1][0])), beyond))
    return result


def _round_width(at_least: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50… that is at least ``at_least``."""
    power = 10 ** math.floor(math.log10(at_least))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= at_least)
