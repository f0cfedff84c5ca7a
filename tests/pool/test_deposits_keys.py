"""Provider keys at rest (sealing, rotation, mask, fingerprint) and the deposit probe."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from modelbank.cli.app import app as cli
from modelbank.pool import keys
from modelbank.pool import service as pool
from modelbank.pool.models import resources_table
from modelbank.pool.probe import probe
from modelbank.secrets import SecretBox, SecretUndecryptable, key_id_of
from tests import factories
from tests.conftest import Db
from tests.pool.helpers import KEY, deposit


def test_mask_and_fingerprint() -> None:
    assert keys.mask("sk-proj-abcdef0123457f3a") == "sk-…7f3a"
    assert keys.mask("gsk_abcdefghij1234") == "…1234"
    assert keys.mask("short") == "…"
    assert keys.fingerprint(f" {KEY}\n") == hashlib.sha256(KEY.encode()).hexdigest()
    assert len(keys.fingerprint(KEY)) == 64


def test_seal_reveal_and_key_ids() -> None:
    secret = SecretBox.generate_key()
    box = SecretBox(secret)
    token, key_id = keys.seal(box, KEY)
    assert KEY not in token and key_id == key_id_of(secret) and len(key_id) == 16
    assert keys.reveal(box, token, key_id) == KEY
    stranger = SecretBox(SecretBox.generate_key())
    with pytest.raises(SecretUndecryptable) as missing:
        keys.reveal(stranger, token, key_id)
    assert missing.value.context == {"key_id": key_id}
    assert KEY not in str(missing.value) and token not in str(missing.value)


def test_rotation_reads_old_keys_and_reseals_under_the_new_one(db: Db) -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    with db.tx() as s:
        dora, model = factories.user(s, "dora"), factories.model(s, "gpt-4o")
        first = deposit(s, dora, model, box=SecretBox(old))
        second = deposit(s, None, model, api_key="sk-platform-key-0000abcd", box=SecretBox(old))
    rotated = SecretBox(new, previous=[old])
    with db.tx() as s:
        token, key_id = pool.sealed_key(s, first.id)
        assert key_id == key_id_of(old) and keys.reveal(rotated, token, key_id) == KEY
    with db.tx() as s, pytest.raises(SecretUndecryptable):
        pool.rotate_keys(s, SecretBox(new))  # without the old key nothing can be resealed
    with db.tx() as s:
        assert pool.rotate_keys(s, rotated) == 2
        assert pool.rotate_keys(s, rotated) == 0
    only_new = SecretBox(new)
    with db.tx() as s:
        for resource, plain in ((first, KEY), (second, "sk-platform-key-0000abcd")):
            token, key_id = pool.sealed_key(s, resource.id)
            assert key_id == only_new.key_id()
            assert keys.reveal(only_new, token, key_id) == plain


def test_rotate_keys_command(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    with db.tx() as s:
        dora, model = factories.user(s, "dora"), factories.model(s, "gpt-4o")
        info = deposit(s, dora, model, box=SecretBox(old))
    monkeypatch.setenv("MODELBANK_SECRET_KEY", new)
    monkeypatch.setenv("MODELBANK_SECRET_KEYS_PREVIOUS", f"{SecretBox.generate_key()},{old}")
    result = CliRunner().invoke(cli, ["pool", "rotate-keys", "--db", db.url])
    assert result.exit_code == 0, result.output
    assert "re-sealed 1 provider keys" in result.output
    with db.tx() as s:
        token, key_id = pool.sealed_key(s, info.id)
    assert key_id == key_id_of(new) and SecretBox(new).decrypt(token) == KEY
    assert old not in result.output and new not in result.output


# ---------------------------------------------------------------- probe


def _probe(transport: httpx.MockTransport) -> pool.ProbeResult:
    async def run() -> pool.ProbeResult:
        async with httpx.AsyncClient(transport=transport) as client:
            return await probe("https://up.example/v1", KEY, client=client)

    return asyncio.run(run())


def test_probe_ok_lists_models_and_sends_the_key_only_as_bearer() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": [{"id": "gpt-4o"}, {"x": 1}]})

    result = _probe(httpx.MockTransport(answer))
    assert result.ok and result.status_code == 200 and result.models == ("gpt-4o",)
    (request,) = seen
    assert str(request.url) == "https://up.example/v1/models"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in result.reason


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (401, "refused"),
        (403, "refused"),
        (404, "refused"),
        (301, "refused"),
        (429, "unreachable"),
        (500, "unreachable"),
        (503, "unreachable"),
    ],
)
def test_probe_classifies_statuses(status: int, outcome: str) -> None:
    answer = httpx.MockTransport(
        lambda r: httpx.Response(status, headers={"location": "https://elsewhere/"})
    )
    result = _probe(answer)
    assert (result.outcome, result.status_code) == (outcome, status)
    assert KEY not in result.reason


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("boom sk-test"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
def test_probe_network_errors_are_unreachable(error: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    result = _probe(httpx.MockTransport(fail))
    assert result.outcome == "unreachable" and result.status_code is None
    assert "sk-test" not in result.reason


def test_verify_command_checks_the_pool(db: Db) -> None:
    with db.tx() as s:
        dora, model = factories.user(s, "dora"), factories.model(s, "gpt-4o")
        info = deposit(s, dora, model)
    ok = CliRunner().invoke(cli, ["verify", "--db", db.url])
    assert ok.exit_code == 0, ok.output
    column = resources_table.c
    with db.tx() as s:
        s.execute(
            update(resources_table)
            .where(column.id == info.id)
            .values(deposit_credit_ucr=column.deposit_credit_ucr + 1)
        )
    broken = CliRunner().invoke(cli, ["verify", "--db", db.url])
    assert broken.exit_code == 1
    assert "pool_deposit_ledger" in broken.output and f"resource {info.id}" in broken.output
    with db.tx() as s:
        s.execute(
            update(resources_table)
            .where(column.id == info.id)
            .values(deposit_credit_ucr=info.deposit_credit_ucr)
        )


def test_probe_of_a_url_httpx_cannot_encode_is_refused() -> None:
    async def run() -> pool.ProbeResult:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda r: httpx.Response(200))
        ) as c:
            return await probe("https://xn--zz.example/v1", KEY, client=c)

    result = asyncio.run(run())
    assert (result.outcome, result.status_code) == ("refused", None)
