"""Secrets at rest: symmetric encryption with Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``).

Secrets that modelbank must use again later (webhook signing secrets: it signs with them) are
stored encrypted, not hashed. API keys, which are only compared, are hashed instead
(:mod:`modelbank.auth.service`).

The key is ``settings.secret_key`` (``MODELBANK_SECRET_KEY``) or, when that is unset, the
content of a key file (``settings.secret_key_file``; default ``modelbank.secret.key`` beside
the SQLite database, or in the working directory) that is created with mode 0600 the first
time a secret is encrypted or decrypted. Losing the key makes every stored secret unreadable
(:class:`SecretUndecryptable`); rotate by re-registering the webhooks.

Tree::

    DomainError
    ├── InvalidSecretKey      (code: invalid_secret_key)   the configured key is malformed
    └── SecretUndecryptable   (code: secret_undecryptable) a stored secret needs another key
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import make_url

from modelbank.config import Settings
from modelbank.errors import DomainError

KEY_FILE_NAME = "modelbank.secret.key"
"""Default key file name (beside the SQLite database, or in the working directory)."""


class InvalidSecretKey(DomainError):
    """The configured key (setting or key file) is not a Fernet key."""

    code = "invalid_secret_key"


class SecretUndecryptable(DomainError):
    """A stored secret cannot be decrypted with this key: the key changed or was lost."""

    code = "secret_undecryptable"


def default_key_file(database_url: str) -> Path:
    """``modelbank.secret.key`` beside a SQLite database file; in the working directory for
    in-memory SQLite and other databases."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).parent / KEY_FILE_NAME
    return Path(KEY_FILE_NAME)


def _fernet(key: str | bytes, source: str) -> Fernet:
    try:
        return Fernet(key.strip())
    except (ValueError, TypeError):
        raise InvalidSecretKey(
            f"the secret key from {source} is not a Fernet key (32 url-safe base64 bytes)",
            source=source,
        ) from None


def _read_or_create(path: Path) -> bytes:
    """The key in ``path``; a new random key written there (mode 0600) when it is missing.
    Creation is atomic (write a private temporary file, then hard-link it into place), so
    two processes starting together end up with the same key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key() + b"\n")
            with contextlib.suppress(FileExistsError):  # another process was first: theirs
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return path.read_bytes()


class SecretBox:
    """Encrypts and decrypts short secrets (strings) with one Fernet key.

    Build it with :meth:`from_settings` (or ``SecretBox(key)`` in tests). A key given
    directly is checked at once; a key file is read, or created, on first use, so building a
    box never touches the disk. Thread-safe.
    """

    def __init__(self, key: str | bytes | None = None, *, key_file: Path | None = None) -> None:
        """Use ``key`` (a Fernet key) or the key in ``key_file``; exactly one of them.
        Raises :class:`InvalidSecretKey` for a malformed ``key``."""
        if (key is None) == (key_file is None):
            raise ValueError("SecretBox needs exactly one of key and key_file")
        self._key_file = key_file
        self._lock = threading.Lock()
        self._box = None if key is None else _fernet(key, "MODELBANK_SECRET_KEY")

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of ``settings.secret_key``, else of ``settings.secret_key_file`` (default
        :func:`default_key_file`). Raises :class:`InvalidSecretKey` for a malformed key."""
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value())
        return cls(key_file=settings.secret_key_file or default_key_file(settings.database_url))

    @staticmethod
    def generate_key() -> str:
        """A new random Fernet key (44 url-safe base64 characters)."""
        return Fernet.generate_key().decode()

    def _fernet(self) -> Fernet:
        if self._box is None:
            with self._lock:
                if self._box is None:
                    assert self._key_file is not None
                    key = _read_or_create(self._key_file)
                    self._box = _fernet(key, str(self._key_file))
        return self._box

    def encrypt(self, plaintext: str) -> str:
        """The Fernet token (url-safe base64 text, ~1.4 × the UTF-8 length + 80 characters)
        of ``plaintext``; a new random IV each call. Raises :class:`InvalidSecretKey` when
        the key file holds no valid key."""
        return self._fernet().encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plaintext of a token made by :meth:`encrypt`. Raises
        :class:`SecretUndecryptable` when it was encrypted with another key (or altered)."""
        try:
            return self._fernet().decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretUndecryptable(
                "a stored secret cannot be decrypted with the configured secret key"
                " (MODELBANK_SECRET_KEY or the key file changed?)"
            ) from None


__all__ = [
    "InvalidSecretKey",
    "SecretBox",
    "SecretUndecryptable",
    "default_key_file",
]
