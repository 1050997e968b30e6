"""Markdown tables for the reports that run folders carry (analysis, steering)."""

import math


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub-flavoured table of `rows` (dicts) in `columns` order; floats to 4 significant
    digits, a missing key as `None`."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
