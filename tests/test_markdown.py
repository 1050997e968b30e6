from interp.markdown import markdown_table


def test_markdown_table_formats_floats_and_missing_cells():
    rows = [{"a": 1, "b": 0.123456}, {"a": "x", "b": float("nan")}]
    assert markdown_table(rows, ["a", "b", "c"]) == (
        "| a | b | c |\n|---|---|---|\n| 1 | 0.1235 | None |\n| x | nan | None |"
    )
