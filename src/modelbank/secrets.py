"""Secrets at rest: symmetric encryption with Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``).

Secrets that modelbank must use again later (webhook signing secrets: it signs with them) are
stored encrypted, not hashed. API keys, which are only compared, are hashed instead
(:mod:`modelbank.auth.service`).

The key is ``settings.secret_key`` (``MODELBANK_SECRET_KEY``) or, when that is unset, the
content of a key file (``settings.secret_key_file``; default ``modelbank.secret.key`` beside
the SQLite database, or in the working directory) that is created with mode 0600 the first
time a secret is encrypted or decrypted. Losing the key makes every stored secret unreadable
(:class:`SecretUndecryptable`).

Rotation: set the new key as ``MODELBANK_SECRET_KEY`` and list the old ones in
``MODELBANK_SECRET_KEYS_PREVIOUS`` (comma-separated): secrets are then decrypted with
whichever key made them (:class:`cryptography.fernet.MultiFernet`) and encrypted with the new
one; :meth:`SecretBox.rotate` re-encrypts a token under the new key (``modelbank pool
rotate-keys`` does it for the pool's provider keys). :meth:`SecretBox.key_id` names the key
a token was made with (a short digest, stored beside pool keys), so a reader knows which key
it needs.

One key per deployment (issue 16 D9): :func:`bind_deployment_key` records the key's id and
where it lives in the database the first time a server or job runner starts; a later
process whose key differs refuses to start (:class:`SecretKeyMismatch`, naming both
places) instead of sealing new secrets and cookies that the others cannot read. A key file
readable by group or others (mode 0644) is used but logged as a warning. Rotating through
``MODELBANK_SECRET_KEYS_PREVIOUS`` moves the registration to the new key.

Tree::

    DomainError
    ├── InvalidSecretKey      (code: invalid_secret_key)   the configured key is malformed
    ├── SecretKeyMismatch     (code: secret_key_mismatch)  another key than the deployment's
    └── SecretUndecryptable   (code: secret_undecryptable) a stored secret needs another key
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from modelbank.config import Settings
from modelbank.db.base import utcnow
from modelbank.errors import DomainError
from modelbank.platform.models import deployment_key_table as deployment_key

log = logging.getLogger("modelbank.secrets")

KEY_FILE_NAME = "modelbank.secret.key"
"""Default key file name (beside the SQLite database, or in the working directory)."""
KEY_ID_LENGTH = 16
"""Hex characters of a key id (64 bits of SHA-256: enough to tell a handful of keys apart,
nothing to recover a 256-bit key from)."""


def key_id_of(key: str | bytes) -> str:
    """The id of a Fernet key: the first :data:`KEY_ID_LENGTH` hex characters of the SHA-256
    of ``modelbank-key-id:`` + the key (domain-separated, so it is no digest used elsewhere)."""
    raw = key.strip().encode() if isinstance(key, str) else key.strip()
    return hashlib.sha256(b"modelbank-key-id:" + raw).hexdigest()[:KEY_ID_LENGTH]


class InvalidSecretKey(DomainError):
    """The configured key (setting or key file) is not a Fernet key."""

    code = "invalid_secret_key"


class SecretKeyMismatch(DomainError):
    """This process's secret key is not the one the database's deployment uses."""

    code = "secret_key_mismatch"


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
    _warn_if_loose(path)
    return path.read_bytes()


LOOSE_MODE_BITS = 0o077
"""Permission bits of a key file that let anyone but its owner read or change it."""


def _warn_if_loose(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & LOOSE_MODE_BITS:
        log.warning(
            "the secret key file %s has mode %04o: anyone on this machine in its group or"
            " beyond can read it; run `chmod 600 %s`",
            path,
            mode,
            path,
        )


class SecretBox:
    """Encrypts and decrypts short secrets (strings) with one Fernet key.

    Build it with :meth:`from_settings` (or ``SecretBox(key)`` in tests). A key given
    directly is checked at once; a key file is read, or created, on first use, so building a
    box never touches the disk. Thread-safe.
    """

    def __init__(
        self,
        key: str | bytes | None = None,
        *,
        key_file: Path | None = None,
        previous: Sequence[str | bytes] = (),
    ) -> None:
        """Use ``key`` (a Fernet key) or the key in ``key_file``; exactly one of them.
        ``previous``: older keys, still accepted for decryption (rotation). Raises
        :class:`InvalidSecretKey` for a malformed key."""
        if (key is None) == (key_file is None):
            raise ValueError("SecretBox needs exactly one of key and key_file")
        self._key_file = key_file
        self.location = (
            "MODELBANK_SECRET_KEY (environment or settings)"
            if key is not None
            else f"{socket.gethostname()}:{Path(key_file or '').resolve()}"
        )
        """Where the key comes from, for messages: the setting, or host and file path."""
        self._lock = threading.Lock()
        self._key: bytes | None = None
        self._box: Fernet | None = None
        if key is not None:
            self._box = _fernet(key, "MODELBANK_SECRET_KEY")
            self._key = key.strip().encode() if isinstance(key, str) else key.strip()
        self._previous = [
            (key_id_of(old), _fernet(old, "MODELBANK_SECRET_KEYS_PREVIOUS"))
            for old in previous
            if old.strip()
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of ``settings.secret_key``, else of ``settings.secret_key_file`` (default
        :func:`default_key_file`), accepting ``settings.secret_keys_previous`` for
        decryption. Raises :class:`InvalidSecretKey` for a malformed key."""
        previous: list[str] = []
        if settings.secret_keys_previous is not None:
            previous = settings.secret_keys_previous.get_secret_value().split(",")
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value(), previous=previous)
        return cls(
            key_file=settings.secret_key_file or default_key_file(settings.database_url),
            previous=previous,
        )

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
                    self._key = key.strip()
        return self._box

    def key_id(self) -> str:
        """The id (:func:`key_id_of`) of the key this box encrypts with."""
        self._fernet()
        assert self._key is not None
        return key_id_of(self._key)

    def has_key(self) -> bool:
        """False only for a key file that does not exist yet (nothing created)."""
        return self._box is not None or (self._key_file is not None and self._key_file.exists())

    def _all(self) -> MultiFernet:
        return MultiFernet([self._fernet(), *(box for _, box in self._previous)])

    def known_key_ids(self) -> list[str]:
        """Ids of every key this box can decrypt with: the current one first."""
        return [self.key_id(), *(kid for kid, _ in self._previous)]

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted under the current key (same plaintext). Raises
        :class:`SecretUndecryptable` when no known key decrypts it."""
        try:
            return self._all().rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretUndecryptable(
                "a stored secret cannot be decrypted with the configured or previous keys"
            ) from None

    def encrypt(self, plaintext: str) -> str:
        """The Fernet token (url-safe base64 text, ~1.4 × the UTF-8 length + 80 characters)
        of ``plaintext``; a new random IV each call. Raises :class:`InvalidSecretKey` when
        the key file holds no valid key."""
        return self._fernet().encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plaintext of a token made by :meth:`encrypt` with the current key or one of
        the previous keys. Raises :class:`SecretUndecryptable` when it was encrypted with
        another key (or altered)."""
        try:
            if not self._previous:
                return self._fernet().decrypt(token.encode()).decode()
            return self._all().decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretUndecryptable(
                "a stored secret cannot be decrypted with the configured secret key"
                " (MODELBANK_SECRET_KEY or the key file changed?)"
            ) from None


def bind_deployment_key(box: SecretBox, engine: Engine) -> None:
    """Make ``box``'s key the deployment's, or check that it is.

    First run on a database: the key (created when it is a key file that does not exist
    yet) is registered with :attr:`SecretBox.location`. Later runs: the same key passes; a
    new key whose previous keys include the registered one takes over (rotation); any other
    key raises :class:`SecretKeyMismatch` naming where the deployment's key lives, without
    creating a key file. An in-memory SQLite database (nothing outlives the process) binds
    nothing and creates no key file."""
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return
    try:
        _bind(box, engine)
    except IntegrityError:  # another process registered its key at the same moment
        _bind(box, engine)


def _bind(box: SecretBox, engine: Engine) -> None:
    with engine.begin() as conn:
        row = conn.execute(select(deployment_key).where(deployment_key.c.id == 1)).first()
        if row is not None and not box.has_key():
            raise SecretKeyMismatch(
                f"this database's secrets are sealed with key {row.key_id}, kept at"
                f" {row.location}; no key is at {box.location}: set MODELBANK_SECRET_KEY or"
                " MODELBANK_SECRET_KEY_FILE to that key",
                expected_key_id=row.key_id,
                expected_location=row.location,
            )
        current = box.key_id()
        if row is None:
            values = {"key_id": current, "location": box.location[:500], "registered_at": utcnow()}
            conn.execute(insert(deployment_key).values(id=1, **values))
        elif row.key_id != current:
            if row.key_id not in box.known_key_ids():
                raise SecretKeyMismatch(
                    f"this process's secret key {current} ({box.location}) is not the"
                    f" deployment's key {row.key_id}, kept at {row.location}: use that key, or"
                    " rotate by setting the new key with the old one in"
                    " MODELBANK_SECRET_KEYS_PREVIOUS",
                    key_id=current,
                    expected_key_id=row.key_id,
                    expected_location=row.location,
                )
            conn.execute(
                update(deployment_key)
                .where(deployment_key.c.id == 1)
                .values(key_id=current, location=box.location[:500], registered_at=utcnow())
            )


__all__ = [
    "InvalidSecretKey",
    "SecretBox",
    "SecretKeyMismatch",
    "SecretUndecryptable",
    "bind_deployment_key",
    "default_key_file",
    "key_id_of",
]
