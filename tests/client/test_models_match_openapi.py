"""modelbank.client's response models agree with the server's OpenAPI document: for every
client method, the operation it sends exists (method and path), and its result model has
exactly the response schema's fields (nested models too). A field the server adds or drops
fails here until the client follows."""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
from pydantic import BaseModel

from modelbank.api import create_app
from modelbank.client import _operations as ops
from modelbank.client._client import _Endpoints, endpoint
from modelbank.client._core import Operation
from modelbank.client.models import Out, Usage
from modelbank.config import load_settings
from modelbank.db.engine import make_engine

CLIENT_ONLY = {"Usage": {"replayed"}}
"""Fields the client fills itself (``Usage.replayed``: the Idempotency-Hit header)."""


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(load_settings(database_url="sqlite://"), engine=make_engine("sqlite://"))
    return dict(app.openapi())


def _dummy(annotation: Any) -> Any:
    """A value of ``annotation`` good enough to build an operation."""
    origin = get_origin(annotation)
    if origin is Literal:
        return get_args(annotation)[0]
    if origin in (typing.Union, types.UnionType):
        return _dummy(next(a for a in get_args(annotation) if a is not type(None)))
    if annotation is int or annotation == int | str:
        return 1
    if annotation is str:
        return "x"
    return []


def _operation(name: str) -> tuple[Operation[Any], Any]:
    build = getattr(ops, name)
    hints = get_type_hints(build)
    args = {
        p.name: _dummy(hints[p.name])
        for p in inspect.signature(build).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }
    return build(**args), get_args(hints["return"])[0]


def _template(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, operations in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return dict(operations[method.lower()])
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def _refs(schema: dict[str, Any]) -> list[str]:
    if "$ref" in schema:
        return [schema["$ref"].rsplit("/", 1)[1]]
    found: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found += _refs(sub)
    if isinstance(schema.get("items"), dict):
        found += _refs(schema["items"])
    return found


def _nested(annotation: Any) -> type[Out] | None:
    if inspect.isclass(annotation) and issubclass(annotation, Out):
        return annotation
    for arg in get_args(annotation):
        found = _nested(arg)
        if found is not None:
            return found
    return None


def _compare(
    document: dict[str, Any], kind: type[BaseModel], component: str, seen: set[str]
) -> list[str]:
    if component in seen:
        return []
    seen.add(component)
    schema = document["components"]["schemas"][component]
    properties = schema.get("properties", {})
    fields = set(kind.model_fields) - CLIENT_ONLY.get(kind.__name__, set())
    problems = [f"{kind.__name__}.{f}: not in {component}" for f in fields - set(properties)]
    problems += [f"{component}.{f}: missing in {kind.__name__}" for f in set(properties) - fields]
    for name in fields & set(properties):
        inner = _nested(kind.model_fields[name].annotation)
        refs = _refs(properties[name])
        if inner is not None and refs:
            problems += _compare(document, inner, refs[0], seen)
    return problems


def test_every_client_method_matches_an_operation_and_its_response(
    document: dict[str, Any],
) -> None:
    names = [n for n, v in vars(_Endpoints).items() if isinstance(v, endpoint)]
    problems: list[str] = []
    compared = 0
    for name in names:
        op, result = _operation(name)
        spec = _template(document, op.method, op.path)
        takes_key = any(p["name"] == "Idempotency-Key" for p in spec.get("parameters", []))
        if takes_key:
            assert op.idempotency_key is not None, f"{name}: the route takes an Idempotency-Key"
        if not (inspect.isclass(result) and issubclass(result, Out)):
            continue
        ok = [r for status, r in spec["responses"].items() if status.startswith("2")]
        schema = ok[0]["content"]["application/json"]["schema"]
        problems += _compare(document, result, _refs(schema)[0], set())
        compared += 1
    assert compared >= 30
    assert Usage.model_fields["replayed"].default is False
    assert problems == [], "\n".join(problems)
