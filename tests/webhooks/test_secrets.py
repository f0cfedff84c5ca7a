"""SecretBox: Fernet encryption at rest, the key from settings or a 0600 key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from modelbank.config import load_settings
from modelbank.secrets import InvalidSecretKey, SecretBox, SecretUndecryptable, default_key_file


def test_round_trip_and_random_iv() -> None:
    box = SecretBox(SecretBox.generate_key())
    a, b = box.encrypt("whsec_abc"), box.encrypt("whsec_abc")
    assert a != b and "whsec_abc" not in a
    assert box.decrypt(a) == box.decrypt(b) == "whsec_abc"


def test_another_key_cannot_decrypt() -> None:
    token = SecretBox(SecretBox.generate_key()).encrypt("s")
    with pytest.raises(SecretUndecryptable) as caught:
        SecretBox(SecretBox.generate_key()).decrypt(token)
    assert caught.value.code == "secret_undecryptable"
    with pytest.raises(SecretUndecryptable):
        SecretBox(SecretBox.generate_key()).decrypt("not a token")


def test_malformed_key_is_refused() -> None:
    with pytest.raises(InvalidSecretKey):
        SecretBox("too-short")
    with pytest.raises(InvalidSecretKey):
        SecretBox.from_settings(load_settings(secret_key="nope"))


def test_key_from_settings() -> None:
    key = SecretBox.generate_key()
    settings = load_settings(secret_key=key)
    assert isinstance(settings.secret_key, SecretStr)
    token = SecretBox.from_settings(settings).encrypt("x")
    assert SecretBox(key).decrypt(token) == "x"


def test_key_file_is_created_lazily_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "modelbank.secret.key"
    box = SecretBox.from_settings(load_settings(secret_key_file=path))
    assert not path.exists(), "building a box must not touch the disk"
    token = box.encrypt("whsec_x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SecretBox(key_file=path).decrypt(token) == "whsec_x"  # a second process: same key
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_corrupt_key_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("garbage\n")
    with pytest.raises(InvalidSecretKey, match=str(path)):
        SecretBox(key_file=path).encrypt("x")


def test_default_key_file_sits_beside_the_sqlite_database(tmp_path: Path) -> None:
    assert (
        default_key_file(f"sqlite:///{tmp_path}/x/mb.db") == tmp_path / "x" / "modelbank.secret.key"
    )
    assert default_key_file("sqlite://") == Path("modelbank.secret.key")
    assert default_key_file("postgresql://u@h/db") == Path("modelbank.secret.key")
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/mb.db")
    SecretBox.from_settings(settings).encrypt("x")
    assert (tmp_path / "modelbank.secret.key").is_file()


def test_exactly_one_key_source() -> None:
    with pytest.raises(ValueError):
        SecretBox()
    with pytest.raises(ValueError):
        SecretBox(SecretBox.generate_key(), key_file=Path("k"))
