"""Provider keys at rest (DESIGN §9): sealed with the project's :class:`SecretBox` (Fernet),
the id of the sealing key stored beside the token so that keys can be rotated; shown only as
a mask and a fingerprint.

A plaintext key exists in memory only: while a deposit is probed and while the router calls
the upstream. It is never logged, never returned, never put in an error's text or context.
"""

from __future__ import annotations

import hashlib

from modelbank.secrets import SecretBox, SecretUndecryptable

MASK_TAIL = 4
"""Characters of the key's end the mask shows (``sk-…7f3a``): enough to tell keys apart."""
MASK_PREFIX_MAX = 3
"""Characters of the key's start the mask shows at most (a provider prefix like ``sk-``)."""
MIN_KEY_LENGTH = 8
"""Shorter keys are masked as ``…`` + nothing: a mask must never reveal most of a key."""


def seal(box: SecretBox, api_key: str) -> tuple[str, str]:
    """Encrypt ``api_key``: (Fernet token, id of the key it was sealed with). Raises
    :class:`~modelbank.secrets.InvalidSecretKey` when the box's key is malformed."""
    return box.encrypt(api_key), box.key_id()


def reveal(box: SecretBox, token: str, key_id: str) -> str:
    """The plaintext of a token made by :func:`seal`. ``key_id`` says which key sealed it:
    the current key or one of ``MODELBANK_SECRET_KEYS_PREVIOUS``. Raises
    :class:`~modelbank.secrets.SecretUndecryptable` (context: ``key_id``, never the token)
    when the box does not hold that key or the token was altered."""
    if key_id not in box.known_key_ids():
        raise SecretUndecryptable(
            f"the provider key was sealed with secret key {key_id}, which is not configured"
            " (set it as MODELBANK_SECRET_KEY or in MODELBANK_SECRET_KEYS_PREVIOUS)",
            key_id=key_id,
        )
    return box.decrypt(token)


def reseal(box: SecretBox, token: str, key_id: str) -> tuple[str, str]:
    """``token`` re-encrypted under the box's current key: (new token, current key id); the
    same pair when it already is. Raises :class:`~modelbank.secrets.SecretUndecryptable`."""
    current = box.key_id()
    if key_id == current:
        return token, current
    reveal(box, token, key_id)  # names the missing key in the error, if it is missing
    return box.rotate(token), current


def mask(api_key: str) -> str:
    """What a key looks like on screen: up to 3 leading characters before the first run of
    letters and digits ends (``sk-``), an ellipsis and the last 4 (``sk-…7f3a``). Keys
    shorter than :data:`MIN_KEY_LENGTH` show only ``…``."""
    key = api_key.strip()
    if len(key) < MIN_KEY_LENGTH:
        return "…"
    head = key[:MASK_PREFIX_MAX]
    dash = head.find("-")
    head = head[: dash + 1] if dash >= 0 else ""
    return f"{head}…{key[-MASK_TAIL:]}"


def fingerprint(api_key: str) -> str:
    """The key's identity in the pool: hex SHA-256 of its UTF-8 bytes (64 characters),
    surrounding whitespace stripped. One live resource per fingerprint."""
    return hashlib.sha256(api_key.strip().encode()).hexdigest()


__all__ = ["fingerprint", "mask", "reseal", "reveal", "seal"]
