"""The `dualsim` command line: ``app`` (typer) and ``main`` (the console script)."""

from dualsim.cli.app import app, main

__all__ = ["app", "main"]
