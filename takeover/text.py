"""Optional numbers as text, for tables, CLI lines and artifacts: one spelling of "no value"."""

from __future__ import annotations

MISSING = "-"  # what a table cell or a line shows for a value that does not exist (no episodes, no v0)


def fmt(value: float | None, spec: str = ".1f") -> str:
    """`value` formatted with the format spec `spec`, or MISSING when there is none."""
    return MISSING if value is None else format(value, spec)
