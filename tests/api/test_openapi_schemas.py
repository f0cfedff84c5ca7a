"""The OpenAPI document types request bodies in validation mode and responses in
serialization mode (issue 12 item 4): a generated client (openapi-typescript) then lets
callers omit every defaulted request field, and may rely on every response field being
present. Walks every request body and response schema of the app's /openapi.json."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelbank.api import create_app
from modelbank.config import load_settings
from modelbank.db.engine import make_engine


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(load_settings(database_url="sqlite://"), engine=make_engine("sqlite://"))
    return dict(app.openapi())


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    return dict(document["components"]["schemas"][ref.rsplit("/", 1)[1]])


def _objects(
    document: dict[str, Any], schema: dict[str, Any], where: str, seen: set[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema reachable from ``schema`` (through $ref, properties, items,
    anyOf/oneOf/allOf, additionalProperties, prefixItems), with a path naming it."""
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen:
            return
        seen.add(ref)
        where = ref.rsplit("/", 1)[1]
    schema = _resolve(document, schema)
    if "properties" in schema:
        yield where, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _objects(document, sub, f"{where}.{name}", seen)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key, [])):
            yield from _objects(document, sub, f"{where}[{i}]", seen)
    for key in ("items", "additionalProperties"):
        sub = schema.get(key)
        if isinstance(sub, dict):
            yield from _objects(document, sub, f"{where}[]", seen)


def _bodies(document: dict[str, Any], *, responses: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            if responses:
                contents = [
                    (f"{name} → {status}", r.get("content", {}))
                    for status, r in operation.get("responses", {}).items()
                ]
            else:
                contents = [(name, operation.get("requestBody", {}).get("content", {}))]
            for label, content in contents:
                for media in content.values():
                    if "schema" in media:
                        yield label, media["schema"]


def test_no_request_body_requires_a_field_that_has_a_default(document: dict[str, Any]) -> None:
    bodies = list(_bodies(document, responses=False))
    assert len(bodies) >= 20  # the walk reaches the API's request bodies
    offenders = []
    checked = 0
    for operation, schema in bodies:
        for where, obj in _objects(document, schema, operation, set()):
            checked += 1
            required = set(obj.get("required", ()))
            for name, prop in obj["properties"].items():
                if name in required and "default" in _resolve(document, prop):
                    offenders.append(f"{operation}: {where}.{name}")
    assert checked >= 20
    assert offenders == [], f"required request fields with a default: {offenders}"


def test_usage_request_needs_only_the_user_and_a_model_reference(document: dict[str, Any]) -> None:
    usage = document["components"]["schemas"]["UsageIn"]
    assert set(usage["required"]) == {"user_id"}  # model or character_id: checked by the app
    assert {"model", "character_id", "cached_input_tokens", "units"} <= set(usage["properties"])


def test_every_response_field_is_required(document: dict[str, Any]) -> None:
    """Serialization mode: a response always carries every field (null when empty), so the
    schema lists them all as required. A response model with a defaulted field needs
    ``model_config = ConfigDict(json_schema_serialization_defaults_required=True)``."""
    offenders = []
    for operation, schema in _bodies(document, responses=True):
        for where, obj in _objects(document, schema, operation, set()):
            if obj.get("additionalProperties") is True or where.startswith("Problem"):
                continue  # open objects (problem+json with its context fields)
            missing = set(obj["properties"]) - set(obj.get("required", ()))
            offenders += [f"{operation}: {where}.{name}" for name in sorted(missing)]
    assert offenders == [], f"optional response fields: {offenders}"
