"""Figures and their presentation: percentiles, the terminal table and target checks.

Every sub-bench returns a plain dict (JSON-ready) with a ``table`` of
(label, value) rows for people, optionally a ``grid`` (a header and rows, for figures
that vary along two axes) and ``targets`` for the pass/fail lines, so the terminal
report and ``--json`` come from the same numbers. Standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

Row = tuple[str, Any]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: a latency that some request really had, not an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def latency_summary(latencies: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds."""
    ms = [x * 1000.0 for x in latencies]
    return {
        "p50_ms": _round(percentile(ms, 0.50)),
        "p95_ms": _round(percentile(ms, 0.95)),
        "p99_ms": _round(percentile(ms, 0.99)),
        "max_ms": _round(max(ms) if ms else None),
    }


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 0.5)


def middle(values: Sequence[float | None]) -> float | None:
    """The median of a few runs' rates (the mean of the middle two for an even count):
    unlike a latency, a rate between two runs' rates is as real as either."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def target(name: str, value: Any, met: bool | None, want: str) -> dict[str, Any]:
    """One target line; ``met`` is None when it could not be judged (e.g. skipped)."""
    return {"target": name, "value": value, "want": want, "met": met}


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:,.3g}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(title: str, report: dict[str, Any]) -> str:
    """A two-column table of a sub-bench's rows, then its targets."""
    rows: list[Row] = list(report.get("table", []))
    targets: list[dict[str, Any]] = report.get("targets", [])
    width = max([len(label) for label, _ in rows] + [len(t["target"]) for t in targets] + [10])
    lines = [f"== {title} " + "=" * max(0, width + 20 - len(title))]
    lines += [f"  {label:<{width}}  {show(value)}" for label, value in rows]
    if report.get("grid"):
        lines += ["  " + line for line in grid(report["grid"]["header"], report["grid"]["rows"])]
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"  {t['target']:<{width}}  {show(t['value'])}  (want {t['want']}: {verdict})")
    return "\n".join(lines)


def grid(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Columns right-aligned under their headers: the first column names the row."""
    cells = [list(header)] + [[show(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in cells]
