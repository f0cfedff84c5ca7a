"""The ``modelbank`` command line (Typer + Rich): one module per command."""

from __future__ import annotations

from modelbank.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
