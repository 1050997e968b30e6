"""The `interp` command line: one Typer app, one module per area, parsing only."""
