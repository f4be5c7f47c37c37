"""CLI command implementations too large for cli.py, one module per command."""
