"""Hash chains over the ledger's transfers and the admin audit log (issue 16 part 2).

Tamper evidence in Formance's shape (its log hashes each entry with the previous entry's
hash): every transfer and every audit record gets a link ``chain_hash = SHA-256(previous
link's hash ‖ canonical content)`` and a position ``chain_seq``. ``modelbank verify
--chain`` recomputes every link: an amount changed together with the account totals (so
the ledger's invariants still hold) breaks the link of that transfer, and the report names
it.

Chaining never serialises writers: transfers and records are inserted *unchained* (the two
columns NULL) by whoever writes them, in parallel, and a **sealer** (:func:`seal`, a step of
``modelbank jobs run``) later takes the unsealed rows in id order, links them after the
chain's head and writes them as one block (``chain_blocks``). Only sealers wait for each
other (a transaction-scoped advisory lock per chain on PostgreSQL; SQLite serialises writers
anyway). A row committed late (a lower id than rows already sealed, as PostgreSQL's
sequences allow) is sealed in the next block: the chain's order is the sealing order, id
order within a block. Until it is sealed a row is not protected: run the jobs often.

Modules: :mod:`~modelbank.chain.links` (the chains, canonical content, the hash),
:mod:`~modelbank.chain.seal`, :mod:`~modelbank.chain.verify`.
"""

from sqlalchemy.orm import Session, sessionmaker

from modelbank.chain.links import AUDIT, CHAINS, GENESIS_HASH, TRANSFERS, Chain
from modelbank.chain.seal import seal, seal_all
from modelbank.chain.verify import ChainReport, verify, verify_all

__all__ = [
    "AUDIT",
    "CHAINS",
    "GENESIS_HASH",
    "TRANSFERS",
    "Chain",
    "ChainReport",
    "check",
    "seal",
    "seal_all",
    "verify",
    "verify_all",
]


def check(factory: sessionmaker[Session]) -> list[str]:
    """Seal every chain, then verify each: the problems found (empty: sound). For the
    test suite's after-every-test check and scripts; ``modelbank verify --chain`` only
    verifies."""
    seal_all(factory)
    with factory() as session, session.begin():
        return [f"chain {r.chain}: {r.problem}" for r in verify_all(session) if not r.ok]
