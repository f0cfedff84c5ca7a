"""One secret key per deployment (issue 16 D9): the first server registers its key in the
database; a process with another key refuses to start and says where the deployment's key
lives (without creating a key file of its own); a rotation moves the registration; a key
file others can read is used, with a warning. SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from modelbank.api import create_app
from modelbank.config import load_settings
from modelbank.secrets import SecretBox, SecretKeyMismatch
from tests.conftest import Db


def _start(db: Db, **settings: object) -> None:
    create_app(load_settings(database_url=db.url, **settings), engine=db.engine)


def test_a_second_folder_with_its_own_key_file_refuses_to_start(db: Db, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "modelbank.secret.key", tmp_path / "b" / "modelbank.secret.key"
    _start(db, secret_key_file=first)
    assert first.exists()
    with pytest.raises(SecretKeyMismatch) as refused:
        _start(db, secret_key_file=second)
    assert str(first.resolve()) in refused.value.message
    assert not second.exists()  # nothing created: the operator points at the right key
    _start(db, secret_key_file=first)  # the deployment's key still starts


def test_a_different_configured_key_refuses_to_start(db: Db) -> None:
    key = SecretBox.generate_key()
    _start(db, secret_key=key)
    _start(db, secret_key=key)
    with pytest.raises(SecretKeyMismatch, match="MODELBANK_SECRET_KEY"):
        _start(db, secret_key=SecretBox.generate_key())


def test_rotation_moves_the_registration(db: Db) -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    _start(db, secret_key=old)
    _start(db, secret_key=new, secret_keys_previous=old)
    _start(db, secret_key=new)
    with pytest.raises(SecretKeyMismatch):
        _start(db, secret_key=old)


def test_a_key_file_others_can_read_is_used_with_a_warning(
    db: Db, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "modelbank.secret.key"
    path.write_text(SecretBox.generate_key() + "\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="modelbank.secrets"):
        _start(db, secret_key_file=path)
    assert any("0644" in r.getMessage() and "chmod 600" in r.getMessage() for r in caplog.records)
    caplog.clear()
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING, logger="modelbank.secrets"):
        _start(db, secret_key_file=path)
    assert not [r for r in caplog.records if r.name == "modelbank.secrets"]
