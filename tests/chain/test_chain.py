"""Hash chains (issue 16 part 2): sealing links every transfer and audit record, ``verify
--chain`` recomputes them and names the first bad link of a coordinated tamper, and sealing
never makes a writer wait."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from modelbank import chain
from modelbank.audit import service as audit
from modelbank.chain.models import chain_blocks_table as blocks
from modelbank.cli.app import app
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers
from tests.conftest import Db
from tests.factories import user

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _funded(db: Db, n: int = 3) -> list[int]:
    """``n`` users with 10 credits each (a grant transfer each); returns their wallets."""
    with db.tx() as session:
        ids = [user(session, f"u{i}", credits_ucr=10_000_000) for i in range(n)]
        return [ledger.user_account_ids(session, [i], AccountCode.USER_WALLET)[i] for i in ids]


def _pay(session: Session, _wallet: int, amount: int, key: str) -> int:
    """A transfer between platform accounts (sales → fees): tampering with it touches no
    wallet, so the wallets' grant invariant stays out of the way of the chain's."""
    sales = ledger.platform_account(session, AccountCode.WORLD_SALES)
    fees = ledger.platform_account(session, AccountCode.PLATFORM_FEES)
    spec = ledger.NewTransfer(sales, fees, amount, TransferCode.FEE, None, None, key)
    return ledger.transfer(session, spec, now=T0)


def _verify(db: Db) -> dict[str, chain.ChainReport]:
    with db.tx() as session:
        return {r.chain: r for r in chain.verify_all(session)}


def test_seal_links_every_row_and_verify_recomputes_them(db: Db) -> None:
    wallets = _funded(db)
    with db.tx() as session:
        _pay(session, wallets[0], 1_000, "p1")
        audit.record(session, "test.action", "thing", 1, before={"a": 1}, after={"a": 2})
    reports = _verify(db)
    assert reports["transfers"].unsealed == 4 and reports["transfers"].sealed == 0
    sealed = chain.seal_all(db.factory, limit=2)
    # the audit log: 3 grants + 1 (+ the packages seeded on PostgreSQL), all sealed
    assert sealed == {"transfers": 4, "audit": reports["audit"].unsealed}
    assert reports["audit"].unsealed >= 4
    reports = _verify(db)
    assert reports["transfers"].ok and reports["audit"].ok, reports
    assert (reports["transfers"].sealed, reports["transfers"].blocks) == (4, 2)
    assert reports["transfers"].unsealed == 0
    with db.tx() as session:
        _pay(session, wallets[1], 2_000, "p2")
    assert chain.seal_all(db.factory) == {"transfers": 1, "audit": 0}
    reports = _verify(db)
    assert reports["transfers"].ok and reports["transfers"].sealed == 5
    with db.tx() as session:
        rows = session.execute(
            select(transfers.c.id, transfers.c.chain_seq).order_by(transfers.c.id)
        ).all()
        heads = session.execute(select(blocks.c.head_hash).order_by(blocks.c.id)).scalars()
        last_head = list(heads)[-1]
    assert [seq for _, seq in rows] == [1, 2, 3, 4, 5]
    assert reports["transfers"].head_hash == last_head


def _tamper_amount(session: Session, transfer_id: int, new_amount: int) -> None:
    """A coordinated tamper: the amount and both accounts' posted totals, so the ledger's
    invariants still hold."""
    row = session.execute(select(transfers).where(transfers.c.id == transfer_id)).one()
    delta = new_amount - int(row.amount)
    session.execute(
        update(transfers).where(transfers.c.id == transfer_id).values(amount=new_amount)
    )
    session.execute(
        update(accounts)
        .where(accounts.c.id == row.debit_account_id)
        .values(debits_posted=accounts.c.debits_posted + delta)
    )
    session.execute(
        update(accounts)
        .where(accounts.c.id == row.credit_account_id)
        .values(credits_posted=accounts.c.credits_posted + delta)
    )


def test_a_coordinated_tamper_passes_the_invariants_and_fails_the_chain(db: Db) -> None:
    wallets = _funded(db)
    with db.tx() as session:
        paid = [_pay(session, w, 1_000 * (i + 1), f"p{i}") for i, w in enumerate(wallets)]
    chain.seal_all(db.factory)
    with db.tx() as session:
        _tamper_amount(session, paid[1], 1)
        assert invariants.check(session) == []  # the balances still add up
    code, out = _cli_verify(db)
    assert code == 1
    position = 3 + 2  # three grants, then the payments
    assert f"chain transfers: transfer {paid[1]} at position {position}" in out
    # the plain verify (no --chain) does not see it: that is what the chain is for
    assert _cli_verify(db, chain_flag=False)[0] == 0
    with db.tx() as session:  # put it back, for the fixture's own check
        _tamper_amount(session, paid[1], 2_000)
    assert _cli_verify(db)[0] == 0


def test_a_rewritten_hash_breaks_the_next_link_and_a_cut_tail_the_blocks(db: Db) -> None:
    wallets = _funded(db)
    with db.tx() as session:
        paid = [_pay(session, wallets[0], 100, f"p{i}") for i in range(3)]
    chain.seal_all(db.factory)
    # change paid[0] and recompute its own link: the link after it no longer follows
    with db.tx() as session:
        row = session.execute(select(transfers).where(transfers.c.id == paid[0])).mappings().one()
        prev = session.execute(
            select(transfers.c.chain_hash).where(transfers.c.chain_seq == row["chain_seq"] - 1)
        ).scalar_one()
        forged = dict(row, ref_type="forged")
        new_hash = chain.links.link(prev, chain.links.content_of(chain.TRANSFERS, forged))
        session.execute(
            update(transfers)
            .where(transfers.c.id == paid[0])
            .values(ref_type="forged", chain_hash=new_hash)
        )
        report = chain.verify(session, chain.TRANSFERS)
        assert report.problem is not None and f"transfer {paid[1]} at position" in report.problem
        session.rollback()
    # delete the last sealed transfer (and undo its totals): the blocks say it existed
    with db.tx() as session:
        _tamper_amount(session, paid[2], 1)  # totals to 1 µcr, then the row goes
        sales = ledger.platform_account(session, AccountCode.WORLD_SALES)
        fees = ledger.platform_account(session, AccountCode.PLATFORM_FEES)
        session.execute(
            update(accounts)
            .where(accounts.c.id == sales)
            .values(debits_posted=accounts.c.debits_posted - 1)
        )
        session.execute(
            update(accounts)
            .where(accounts.c.id == fees)
            .values(credits_posted=accounts.c.credits_posted - 1)
        )
        session.execute(text("DELETE FROM transfers WHERE id = :id"), {"id": paid[2]})
        assert invariants.check(session) == []
        report = chain.verify(session, chain.TRANSFERS)
        assert report.problem is not None and "deleted from the end" in report.problem
        session.rollback()
    assert _verify(db)["transfers"].ok


def test_audit_records_are_chained_too(db: Db) -> None:
    with db.tx() as session:
        first = audit.record(session, "price.set", "model", 7, before={"p": 1}, after={"p": 2})
        audit.record(session, "price.set", "model", 7, before={"p": 2}, after={"p": 3})
    chain.seal_all(db.factory)
    with db.tx() as session:
        session.execute(
            text("UPDATE audit_records SET after = :v WHERE id = :id"),
            {"v": '{"p": 99}', "id": first},
        )
        seq = session.execute(
            text("SELECT chain_seq FROM audit_records WHERE id = :id"), {"id": first}
        ).scalar_one()
        report = chain.verify(session, chain.AUDIT)
        assert report.problem is not None
        assert report.problem.startswith(f"audit record {first} at position {seq}")
        session.rollback()


def test_a_row_committed_late_is_sealed_in_the_next_block(db: Db) -> None:
    """Chain order is sealing order: a transfer whose id is below sealed ones (PostgreSQL
    commits out of id order) is linked after them, and the chain stays sound."""
    wallets = _funded(db, 1)
    with db.tx() as session:
        late = _pay(session, wallets[0], 5, "late")
        _pay(session, wallets[0], 6, "early")
        session.execute(update(transfers).where(transfers.c.id == late).values(chain_seq=-1))
    chain.seal_all(db.factory)  # seals everything but the "in-flight" one
    with db.tx() as session:
        session.execute(update(transfers).where(transfers.c.id == late).values(chain_seq=None))
    assert chain.seal_all(db.factory)["transfers"] == 1
    with db.tx() as session:
        seq = session.execute(select(transfers.c.chain_seq).where(transfers.c.id == late)).scalar()
    assert seq == 3
    assert _verify(db)["transfers"].ok


def test_a_sealer_holding_its_lock_never_makes_a_writer_wait(db: Db) -> None:
    if db.backend != "postgres":
        pytest.skip("SQLite serialises every writer anyway (BEGIN IMMEDIATE)")
    wallets = _funded(db, 2)
    with db.factory() as sealer, sealer.begin():
        assert chain.seal(sealer, chain.TRANSFERS) == 2
        done = threading.Event()

        def write() -> None:
            with db.tx() as session:
                _pay(session, wallets[1], 10, "during-seal")
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        assert done.wait(10), "a writer waited for the sealer"
        thread.join()
    assert chain.seal_all(db.factory)["transfers"] == 1
    assert _verify(db)["transfers"].ok


def _cli_verify(db: Db, *, chain_flag: bool = True) -> tuple[int, str]:
    args = ["verify", "--db", db.url, *(["--chain"] if chain_flag else [])]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout + result.stderr
