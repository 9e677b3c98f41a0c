"""The `tether` command: one Typer sub-app per command group."""
