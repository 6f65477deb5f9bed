"""The one Markdown table writer, and the number formats the reports share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[str], align: str, rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table as lines: `align` has one letter per column, "l" (left) or "r" (right).

    An empty cell is written as a single space (``| |``).
    """
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"table: align needs one of 'l'/'r' per column ({len(header)}), got {align!r}")
    return [row(header), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|", *map(row, rows)]


def row(cells: Sequence[object]) -> str:
    """One table row: ``| a | b |``."""
    return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"


def pct(x: float) -> str:
    """A fraction as a percentage with two decimals: 0.9923 -> "99.23%"."""
    return f"{100 * x:.2f}%"
