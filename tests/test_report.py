"""Report helpers."""

from experiments.report import markdown_table


def test_markdown_table_keeps_column_order_and_values():
    table = markdown_table([{"b": 2, "a": "x"}], {"a": "A", "b": "B"})
    assert table.splitlines() == ["| A | B |", "|---|---|", "| x | 2 |"]
