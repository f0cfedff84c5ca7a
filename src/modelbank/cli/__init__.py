"""The ``modelbank`` command line (Typer + Rich): one module per command."""

from __future__ import annotations

from modelbank.cli.app import app
from modelbank.cli.helptext import tidy_help

tidy_help(app)  # every command is registered once modelbank.cli.app is imported


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
