"""Every request body is strict about JSON types (issue 16 D6): each integer and boolean in
every request schema (the ``Strict`` subclasses, nested models included) is a strict one
(``true`` is not 1, ``1.0`` is not an integer, ``"5"`` is not a number), and every timestamp
refuses numbers (``12345`` is not read as Unix time). A structural check over the compiled
schemas, so a field added later without the strict type fails here."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest

import modelbank.api
from modelbank.api.schemas import Strict

SCHEMA_MODULES = sorted(
    info.name
    for info in pkgutil.iter_modules(modelbank.api.__path__)
    if info.name == "schemas" or info.name.endswith("_schemas")
)
"""Every ``modelbank.api`` module of request and response bodies (new ones included)."""


def _request_models() -> list[type[Strict]]:
    for name in SCHEMA_MODULES:
        importlib.import_module(f"modelbank.api.{name}")

    def below(cls: type[Strict]) -> Iterator[type[Strict]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from below(sub)

    return sorted(set(below(Strict)), key=lambda c: f"{c.__module__}.{c.__name__}")


def _lax_nodes(node: Any, text_only: bool = False) -> Iterator[str]:
    """The lax scalar nodes under a core schema: ints/bools/floats without ``strict`` and
    datetimes not behind the text-only validator."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind in ("int", "bool", "float") and not node.get("strict"):
            yield kind
        if kind == "datetime" and not text_only:
            yield "datetime"
        function = node.get("function", {})
        guarded = text_only or (
            kind == "function-before"
            and getattr(function.get("function"), "__name__", "") == "_text_only"
        )
        for key, value in node.items():
            if key not in ("metadata", "serialization"):
                yield from _lax_nodes(value, guarded)
    elif isinstance(node, list):
        for value in node:
            yield from _lax_nodes(value, text_only)


@pytest.mark.parametrize("model", _request_models(), ids=lambda c: c.__name__)
def test_request_schema_is_strict(model: type[Strict]) -> None:
    assert list(_lax_nodes(model.__pydantic_core_schema__)) == []
