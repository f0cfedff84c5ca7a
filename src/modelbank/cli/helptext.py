"""Help text that reads well in a terminal (Typer + Rich, ``rich_markup_mode="rich"``).

Docstrings are wrapped at 100 columns in the source; Typer's Rich help keeps those line
breaks in a command's later paragraphs and in the first paragraph shown in the group's
command list, so the terminal wraps the lines again and sentences break in the middle.
:func:`tidy_help` rewrites every command's help once, when the app is built: the lines of a
paragraph are joined into one, which Rich wraps at the terminal's width. A paragraph whose
later lines are indented (an example block) is kept as written.
"""

from __future__ import annotations

import inspect

import typer


def prose(text: str) -> str:
    """``text`` (a docstring) with each paragraph's lines joined by single spaces, except
    paragraphs whose lines after the first are indented, kept line by line."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    tidy: list[str] = []
    for paragraph in paragraphs:
        lines = paragraph.split("\n")
        if any(line[:1].isspace() for line in lines[1:]):
            tidy.append(paragraph)
        else:
            tidy.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(tidy)


def tidy_help(app: typer.Typer) -> None:
    """Apply :func:`prose` to the help of every command of ``app`` and of its sub-apps (and
    to the sub-apps' own help), in place. Call it after every command is registered."""
    for command in app.registered_commands:
        text = command.help or inspect.getdoc(command.callback)
        if text:
            command.help = prose(text)
    for group in app.registered_groups:
        instance = group.typer_instance
        if instance is None:
            continue
        if group.help:
            group.help = prose(group.help)
        tidy_help(instance)
