"""reporting.tables: the one Markdown table writer."""

from __future__ import annotations

import pytest

from lightning_modules.reporting.tables import pct, table


def test_table_aligns_columns_and_writes_empty_cells_as_one_space():
    assert table(["op", "ms"], "lr", [["affine", "0.5"], ["**mean**", ""]]) == [
        "| op | ms |",
        "|---|---:|",
        "| affine | 0.5 |",
        "| **mean** | |",
    ]
    with pytest.raises(ValueError, match="one of 'l'/'r' per column"):
        table(["a", "b"], "l", [])
    assert pct(0.99234) == "99.23%"
