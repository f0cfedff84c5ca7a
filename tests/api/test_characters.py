"""Charging by character (issue 12 item 8): the model API sets and shows ``character_id``
(one active model per character), usage, batch and holds accept ``character_id`` instead of
``model``, resolved to the active model of that character. Exact µcr; every refusal is
problem+json and leaves the ledger as it was. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import inspect, select

from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.errors import CharacterInUse, CharacterNotFound
from modelbank.catalog.models import models_table
from modelbank.metering.models import usage_events_table
from tests.api.conftest import Api, problem
from tests.conftest import Db

V1 = "/api/v1"
CR = 1_000_000
CHEAP = {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 2_000_000}
"""1 µcr per input token, 2 per output token."""
DEAR = {"input_ucr_per_mtok": 3_000_000, "output_ucr_per_mtok": 7_000_000}
"""3 µcr per input token, 7 per output token."""


def idem(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def balance(api: Api, user_id: int) -> int:
    r = api.client.get(f"{V1}/users/{user_id}/wallet", headers=api.admin)
    assert r.status_code == 200, r.text
    return int(r.json()["balance_ucr"])


def by_character(api: Api, user_id: int, character: str, key: str, **fields: Any) -> Any:
    return api.client.post(
        f"{V1}/usage",
        json={"user_id": user_id, "character_id": character, **fields},
        headers=idem(api.service, key),
    )


def test_model_api_sets_shows_edits_and_unlinks_a_character(api: Api) -> None:
    made = api.model("luna-model", character_id="char-luna", price=CHEAP)
    assert made["character_id"] == "char-luna"
    model_id = made["id"]
    r = api.client.get(f"{V1}/models/{model_id}", headers=api.admin)
    assert r.status_code == 200 and r.json()["character_id"] == "char-luna"
    listed = api.client.get(f"{V1}/models", headers=api.admin).json()["items"]
    assert [(m["id"], m["character_id"]) for m in listed] == [(model_id, "char-luna")]

    edit = f"{V1}/models/{model_id}"
    r = api.client.patch(edit, json={"character_id": "char-nova"}, headers=api.admin)
    assert r.status_code == 200 and r.json()["character_id"] == "char-nova"
    r = api.client.patch(edit, json={"name": "Luna"}, headers=api.admin)  # absent: kept
    assert r.status_code == 200 and r.json()["character_id"] == "char-nova"
    r = api.client.patch(edit, json={"character_id": None}, headers=api.admin)  # null: unlink
    assert r.status_code == 200 and r.json()["character_id"] is None
    assert api.client.get(edit, headers=api.admin).json()["character_id"] is None

    plain = api.model("plain", price=CHEAP)
    assert plain["character_id"] is None
    for bad in ("", " padded", "x" * 201, "trailing\n"):
        body = problem(
            api.client.post(
                f"{V1}/models",
                json={"slug": "bad", "name": "bad", "character_id": bad},
                headers=api.admin,
            ),
            422,
            "validation_error",
        )
        assert body["errors"][0]["loc"][-1] == "character_id"


def test_one_active_model_per_character(api: Api) -> None:
    first = api.model("first", character_id="char-1", price=CHEAP)
    before = api.ledger_state()
    body = problem(
        api.client.post(
            f"{V1}/models",
            json={"slug": "second", "name": "second", "character_id": "char-1", "price": CHEAP},
            headers=api.admin,
        ),
        409,
        "character_in_use",
    )
    assert body["character_id"] == "char-1" and body["model_id"] == first["id"]
    assert (
        api.client.get(f"{V1}/models", params={"search": "second"}, headers=api.admin).json()[
            "items"
        ]
        == []
    )
    second = api.model("second", price=CHEAP)
    problem(
        api.client.patch(
            f"{V1}/models/{second['id']}", json={"character_id": "char-1"}, headers=api.admin
        ),
        409,
        "character_in_use",
    )
    assert api.ledger_state() == before

    # an inactive model keeps its link as history; the character is free for another model
    assert api.client.delete(f"{V1}/models/{first['id']}", headers=api.admin).status_code == 200
    r = api.client.patch(
        f"{V1}/models/{second['id']}", json={"character_id": "char-1"}, headers=api.admin
    )
    assert r.status_code == 200 and r.json()["character_id"] == "char-1"
    old = api.client.get(f"{V1}/models/{first['id']}", headers=api.admin).json()
    assert old["character_id"] == "char-1" and old["is_active"] is False
    # reactivating the old model would give the character two active models
    problem(
        api.client.patch(f"{V1}/models/{first['id']}", json={"is_active": True}, headers=api.admin),
        409,
        "character_in_use",
    )
    r = api.client.patch(
        f"{V1}/models/{first['id']}",
        json={"is_active": True, "character_id": "char-1b"},
        headers=api.admin,
    )
    assert r.status_code == 200 and r.json()["is_active"] and r.json()["character_id"] == "char-1b"


def test_usage_by_character_charges_that_characters_model_to_the_ucr(api: Api) -> None:
    cheap = api.model("cheap", character_id="char-cheap", price=CHEAP)
    dear = api.model("dear", character_id="char-dear", price=DEAR)
    user_id, user = api.user("alice", credits_ucr=10 * CR)

    r = by_character(api, user_id, "char-dear", "u1", input_tokens=1_000, output_tokens=500)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["model_id"] == dear["id"]
    assert out["charge_ucr"] == 1_000 * 3 + 500 * 7 == 6_500
    assert out["balance_ucr"] == 10 * CR - 6_500 == balance(api, user_id)
    assert r.headers["idempotency-hit"] == "false"

    # the same key and character again: the first result, charged once
    again = by_character(api, user_id, "char-dear", "u1", input_tokens=1_000, output_tokens=500)
    assert again.status_code == 201 and again.headers["idempotency-hit"] == "true"
    assert again.json() == out and balance(api, user_id) == 10 * CR - 6_500

    # a user key, for itself, by character; the cheap model's price
    r = api.client.post(
        f"{V1}/usage",
        json={"user_id": user_id, "character_id": "char-cheap", "input_tokens": 10},
        headers=idem(user, "u2"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["model_id"] == cheap["id"] and r.json()["charge_ucr"] == 10
    assert balance(api, user_id) == 10 * CR - 6_510
    # another user's wallet stays hidden, whatever the model reference
    other, _ = api.user("bob", credits_ucr=CR)
    api.rejects(
        "POST",
        f"{V1}/usage",
        404,
        "user_not_found",
        json={"user_id": other, "character_id": "char-cheap", "input_tokens": 10},
        headers=idem(user, "u3"),
    )


def test_usage_names_exactly_one_model_reference(api: Api) -> None:
    api.model("m", character_id="char-m", price=CHEAP)
    user_id, _ = api.user("alice", credits_ucr=CR)
    for i, ref in enumerate(({}, {"model": "m", "character_id": "char-m"})):
        body = api.rejects(
            "POST",
            f"{V1}/usage",
            422,
            "validation_error",
            json={"user_id": user_id, "input_tokens": 5, **ref},
            headers=idem(api.service, f"k{i}"),
        )
        assert "exactly one of model and character_id" in body["detail"]


def test_unknown_or_inactive_character_is_a_404_problem(api: Api) -> None:
    gone = api.model("gone", character_id="char-gone", price=CHEAP)
    api.client.delete(f"{V1}/models/{gone['id']}", headers=api.admin)
    user_id, _ = api.user("alice", credits_ucr=CR)
    for character in ("char-nobody", "char-gone"):
        body = api.rejects(
            "POST",
            f"{V1}/usage",
            404,
            "character_not_found",
            json={"user_id": user_id, "character_id": character, "input_tokens": 5},
            headers=idem(api.service, character),
        )
        assert body["type"] == "urn:modelbank:problem:character_not_found"
        assert body["character_id"] == character
    # as an unknown model is
    problem(api.charge(user_id, "nobody", key="m0", input_tokens=5), 404, "model_not_found")


def test_batch_mixes_model_and_character_references(api: Api) -> None:
    cheap = api.model("cheap", price=CHEAP)
    dear = api.model("dear", character_id="char-dear", price=DEAR)
    user_id, _ = api.user("alice", credits_ucr=CR)
    events = [
        {"idempotency_key": "b1", "user_id": user_id, "model": "cheap", "input_tokens": 100},
        {
            "idempotency_key": "b2",
            "user_id": user_id,
            "character_id": "char-dear",
            "input_tokens": 100,
            "output_tokens": 10,
        },
        {
            "idempotency_key": "b3",
            "user_id": user_id,
            "character_id": "char-nobody",
            "input_tokens": 100,
        },
        {"idempotency_key": "b4", "user_id": user_id, "model": dear["id"], "input_tokens": 1},
    ]
    r = api.client.post(f"{V1}/usage/batch", json={"events": events}, headers=api.service)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["charged"], out["replayed"], out["rejected"]) == (3, 0, 1)
    results = out["results"]
    assert [x["idempotency_key"] for x in results] == ["b1", "b2", "b3", "b4"]
    assert [x["status"] for x in results] == ["charged", "charged", "rejected", "charged"]
    assert [x["charge_ucr"] for x in results] == [100, 100 * 3 + 10 * 7, 0, 3]
    assert results[2]["error"]["code"] == "character_not_found"
    assert results[2]["usage_id"] is None
    assert balance(api, user_id) == CR - 473 == results[3]["balance_ucr"]
    with api.db.tx() as session:  # each usage row names the model its reference resolved to
        rows = dict(
            session.execute(
                select(usage_events_table.c.idempotency_key, usage_events_table.c.model_id)
            ).all()
        )
    assert rows == {"b1": cheap["id"], "b2": dear["id"], "b4": dear["id"]}
    # the same batch again: replays, and the unknown character still rejected
    again = api.client.post(f"{V1}/usage/batch", json={"events": events}, headers=api.service)
    assert (again.json()["replayed"], again.json()["rejected"]) == (3, 1)
    assert balance(api, user_id) == CR - 473
    problem(
        api.client.post(
            f"{V1}/usage/batch",
            json={"events": [{**events[0], "character_id": "char-dear"}]},
            headers=api.service,
        ),
        422,
        "validation_error",
    )


def test_holds_by_character(api: Api) -> None:
    model = api.model("m", character_id="char-m", price=CHEAP)
    user_id, user = api.user("alice", credits_ucr=10 * CR)
    r = api.client.post(
        f"{V1}/users/{user_id}/holds",
        json={"amount_ucr": 2 * CR, "timeout_s": 60, "character_id": "char-m"},
        headers=idem(user, "h1"),
    )
    assert r.status_code == 201, r.text
    hold = r.json()
    assert hold["model_id"] == model["id"]
    r = api.client.post(
        f"{V1}/holds/{hold['id']}/capture",
        json={"amount_ucr": CR, "character_id": "char-m"},
        headers=idem(user, "c1"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["charge_ucr"] == CR and balance(api, user_id) == 9 * CR
    api.rejects(
        "POST",
        f"{V1}/users/{user_id}/holds",
        404,
        "character_not_found",
        json={"amount_ucr": CR, "timeout_s": 60, "character_id": "char-nobody"},
        headers=idem(user, "h2"),
    )
    api.rejects(
        "POST",
        f"{V1}/users/{user_id}/holds",
        422,
        "validation_error",
        json={"amount_ucr": CR, "timeout_s": 60, "character_id": "char-m", "model": "m"},
        headers=idem(user, "h3"),
    )


def test_concurrent_creates_of_one_character_one_wins_the_other_is_409(api: Api) -> None:
    """Over HTTP, in threads: whichever order they land in, one 201 and one 409 (never a
    500), five rounds."""
    for round_ in range(5):
        barrier = threading.Barrier(2)

        def create(i: int, round_: int = round_, barrier: Any = barrier) -> Any:
            barrier.wait(5)
            return api.client.post(
                f"{V1}/models",
                json={
                    "slug": f"r{round_}-{i}",
                    "name": "x",
                    "character_id": f"char-r{round_}",
                    "price": CHEAP,
                },
                headers=api.admin,
            )

        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(create, range(2)))
        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
        problem(next(r for r in responses if r.status_code == 409), 409, "character_in_use")


def _new(slug: str, character: str) -> catalog.NewModel:
    return catalog.NewModel(
        slug=slug, name=slug, provider="p", mode=Mode.CHAT, character_id=character
    )


def test_racing_links_past_the_check_are_refused_by_the_index_as_409(db: Db) -> None:
    """The race the pre-check cannot see: two transactions both pass it; the second write
    waits on the partial unique index (PostgreSQL) and, once the first commits, raises the
    typed :class:`CharacterInUse` (the API's 409), not an integrity error. On SQLite writers
    are serialised, so the second sees the first and is refused by the check itself."""
    if db.backend != "postgres":
        with db.tx() as session:
            catalog.create_model(session, _new("a", "char-x"))
        with pytest.raises(CharacterInUse), db.tx() as session:
            catalog.create_model(session, _new("b", "char-x"))
        return
    first_inserted, outcome = threading.Event(), []

    def second() -> None:
        first_inserted.wait(5)
        try:
            with db.tx() as session:
                catalog.create_model(session, _new("b", "char-x"))
            outcome.append("created")
        except CharacterInUse as exc:
            outcome.append(exc.code)

    thread = threading.Thread(target=second)
    with db.tx() as session:
        catalog.create_model(session, _new("a", "char-x"))
        thread.start()
        first_inserted.set()
        thread.join(0.5)  # the second is blocked on the index until this commits
        assert thread.is_alive()
    thread.join(10)
    assert outcome == ["character_in_use"]
    with db.tx() as session:
        assert catalog.model_for_character(session, "char-x").slug == "a"
        with pytest.raises(CharacterNotFound):
            catalog.model_for_character(session, "char-y")


def test_resolver_returns_the_active_model_per_character(db: Db) -> None:
    with db.tx() as session:
        a = catalog.create_model(session, _new("a", "char-a"))
        b = catalog.create_model(session, _new("b", "char-b"))
        found = catalog.resolve_characters(session, ["char-a", "char-b", "char-none", "char-a"])
        assert {k: v.id for k, v in found.items()} == {"char-a": a.id, "char-b": b.id}
        assert found["char-a"].character_id == "char-a"
        assert catalog.resolve_characters(session, []) == {}


def test_partial_unique_index_is_in_the_schema(db: Db) -> None:
    indexes = {i["name"]: i for i in inspect(db.engine).get_indexes("models")}
    index = indexes["uq_models_active_character"]
    assert index["unique"] and index["column_names"] == ["character_id"]
    declared = {i.name for i in models_table.indexes}
    assert "uq_models_active_character" in declared
    with db.tx() as session:
        assert session.execute(select(models_table.c.character_id)).all() == []
