"""The marketplace's invariants (DESIGN §10, issue 15 §3), checked by ``modelbank verify`` and
after every test scenario. Names are stable:

* ``market_order_escrow``: per order, seller + commission + returned ≤ paid, and the ledger
  agrees: the escrow transfers that name the order (ref ``marketplace_order``) paid in
  exactly ``paid_ucr`` and paid out exactly seller + commission + returned.
* ``market_order_closed``: a closed order holds nothing in escrow (released to seller +
  commission + returned = paid); an open one has an active allocation.
* ``market_allocation_sums``: an order's allocations share its payment exactly and their
  releases and returns sum to the order's; a closed allocation holds nothing in escrow.
* ``market_escrow_balance``: the ``marketplace_escrow`` account's balance = the escrow the
  open orders still hold.
* ``market_quota``: per resource, the market part offered or sold (open listings, open
  bundles, active allocations' quantity, closed allocations' consumption) ≤ the market
  part; the pool part (quota − market part) is what was credited at deposit
  (:mod:`modelbank.pool.invariants`), so pool part + market part = quota and no µUSD is
  both credited and sold.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.invariants import Violation
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers
from modelbank.marketplace.escrow import ORDER_REF
from modelbank.marketplace.listings import reserved_uusd
from modelbank.marketplace.models import allocations_table as allocations
from modelbank.marketplace.models import orders_table as orders
from modelbank.pool.models import resources_table as resources


def check(session: Session, *, limit: int = 20) -> list[Violation]:
    """Every broken marketplace invariant (at most ``limit`` per name)."""
    found: dict[str, list[Violation]] = defaultdict(list)

    def add(name: str, detail: str) -> None:
        if len(found[name]) < limit:
            found[name].append(Violation(name, detail))

    conn = session.connection()
    escrow_id = ledger.platform_account(session, AccountCode.MARKETPLACE_ESCROW)
    paid_in: dict[int, int] = defaultdict(int)
    paid_out: dict[int, int] = defaultdict(int)
    for ref_id, debit, credit, amount in conn.execute(
        select(
            transfers.c.ref_id,
            transfers.c.debit_account_id,
            transfers.c.credit_account_id,
            func.sum(transfers.c.amount),
        )
        .where(transfers.c.ref_type == ORDER_REF, transfers.c.flags == 0)
        .group_by(transfers.c.ref_id, transfers.c.debit_account_id, transfers.c.credit_account_id)
    ):
        if int(credit) == escrow_id:
            paid_in[int(ref_id)] += int(amount)
        if int(debit) == escrow_id:
            paid_out[int(ref_id)] += int(amount)
    per_alloc: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for row in conn.execute(select(allocations)):
        sums = per_alloc[int(row.order_id)]
        sums[0] += int(row.paid_ucr)
        sums[1] += int(row.seller_ucr)
        sums[2] += int(row.commission_ucr)
        sums[3] += int(row.returned_ucr)
        sums[4] += row.status == "active"
        out = int(row.seller_ucr) + int(row.commission_ucr) + int(row.returned_ucr)
        if row.status != "active" and out != int(row.paid_ucr):
            add(
                "market_allocation_sums",
                f"allocation {row.id} is {row.status} with {int(row.paid_ucr) - out} µcr"
                " still in escrow",
            )
    open_escrow = 0
    for row in conn.execute(select(orders)):
        order_id, paid = int(row.id), int(row.paid_ucr)
        out = int(row.seller_ucr) + int(row.commission_ucr) + int(row.returned_ucr)
        if out > paid or paid_in[order_id] != paid or paid_out[order_id] != out:
            add(
                "market_order_escrow",
                f"order {order_id}: paid {paid}, released + returned {out}; ledger paid in"
                f" {paid_in[order_id]}, out {paid_out[order_id]}",
            )
        if row.status == "closed" and out != paid:
            add("market_order_closed", f"order {order_id} is closed with {paid - out} µcr held")
        if row.kind != "stake":
            sums = per_alloc.get(order_id, [0, 0, 0, 0, 0])
            mine = [paid, int(row.seller_ucr), int(row.commission_ucr), int(row.returned_ucr)]
            if sums[:4] != mine:
                add(
                    "market_allocation_sums",
                    f"order {order_id}: allocations sum to {sums[:4]}, the order to {mine}",
                )
            if row.status == "open" and not sums[4]:
                add("market_order_closed", f"order {order_id} is open with no active allocation")
        if row.status == "open":
            open_escrow += paid - out
    balance = conn.execute(
        select(accounts.c.credits_posted - accounts.c.debits_posted).where(
            accounts.c.id == escrow_id
        )
    ).scalar_one()
    if int(balance) != open_escrow:
        add(
            "market_escrow_balance",
            f"marketplace_escrow holds {int(balance)} µcr, open orders {open_escrow} µcr",
        )
    for resource_id, market in conn.execute(
        select(resources.c.id, resources.c.market_quota_uusd).where(
            resources.c.market_quota_uusd > 0
        )
    ):
        reserved = reserved_uusd(session, int(resource_id))
        if reserved > int(market):
            add(
                "market_quota",
                f"resource {resource_id}: {reserved} µUSD of its {int(market)} µUSD market part"
                " offered or sold",
            )
    return [v for name in sorted(found) for v in found[name]]
