"""Re-sealing the pool's provider keys under the current secret key (DESIGN §9: "key id
stored for rotation").

Rotate by making the new Fernet key ``MODELBANK_SECRET_KEY``, listing the old one in
``MODELBANK_SECRET_KEYS_PREVIOUS``, and running ``modelbank pool rotate-keys`` (this
module's :func:`rotate_keys`, in bounded batches); once it reports nothing left, the old key
can be dropped from the setting.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.pool import keys
from modelbank.pool.models import resources_table as resources
from modelbank.secrets import SecretBox

ROTATE_BATCH = 500
"""Resources re-sealed per transaction."""


def rotate_keys(session: Session, box: SecretBox, *, limit: int = ROTATE_BATCH) -> int:
    """Re-seal up to ``limit`` resources whose key was sealed with another key than
    ``box``'s current one (every status: an ended resource's key is kept sealed too); return
    how many. Run it until it returns 0. Raises
    :class:`~modelbank.secrets.SecretUndecryptable` (context: the missing ``key_id``) when a
    key was sealed with a key the box does not hold; nothing of the batch is written then
    (the caller's transaction rolls back)."""
    current = box.key_id()
    conn = session.connection()
    rows = conn.execute(
        select(resources.c.id, resources.c.key_encrypted, resources.c.key_id)
        .where(resources.c.key_id != current)
        .order_by(resources.c.id)
        .limit(limit)
        .with_for_update()
    ).all()
    now = utcnow()
    for row in rows:
        token, key_id = keys.reseal(box, row.key_encrypted, row.key_id)
        conn.execute(
            update(resources)
            .where(resources.c.id == row.id)
            .values(key_encrypted=token, key_id=key_id, updated_at=now)
        )
    return len(rows)
