"""Users with auto top-up in a replay (issue 13, DESIGN §15): a share of the users turn auto
top-up on (the manual provider: the platform confirms each payment). Their charges queue the
top-up themselves (:mod:`modelbank.wallets.autotopup`: the crossing is seen in the charge's
transaction); after each batch the replay runs the due ``auto_topup`` tasks, as
``modelbank jobs run`` would, and the operator step confirms the pending top-ups, as an
admin does with ``POST /api/v1/admin/purchases/{id}/confirm``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelbank.db.engine import transaction
from modelbank.replay.report import ReplayReport
from modelbank.tasks import service as tasks
from modelbank.wallets import autotopup, autotopup_run, packages, purchases
from modelbank.wallets.models import purchases_table
from modelbank.wallets.providers import ManualProvider

SPREAD = 7_919
"""A prime that spreads user ids over 0–99 (which users have auto top-up)."""
TASKS_PER_ROUND = 200


def has_auto_topup(user_id: int, percent: int) -> bool:
    """Whether user ``user_id`` is among the ``percent`` % with auto top-up (deterministic)."""
    return (user_id * SPREAD) % 100 < percent


class AutoTopUps:
    """Turns auto top-up on for a share of the users and settles their top-ups per batch."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        percent: int,
        package: int,
        threshold_ucr: int,
        max_per_month: int,
        key_prefix: str,
    ) -> None:
        self.factory = factory
        self.percent = percent
        self.package = package
        self.threshold_ucr = threshold_ucr
        self.max_per_month = max_per_month
        self.key_prefix = key_prefix
        self.users: set[int] = set()
        self.seen: set[int] = set()
        self.paid_users: set[int] = set()

    def enrol(self, user_ids: Iterable[int]) -> None:
        """Turn auto top-up on for the new users of the share (a user already below the
        threshold gets a top-up queued at once)."""
        new = [u for u in dict.fromkeys(user_ids) if u not in self.seen]
        self.seen.update(new)
        chosen = [u for u in new if has_auto_topup(u, self.percent)]
        if not chosen:
            return
        with transaction(self.factory) as session:
            price = packages.get_package(session, self.package).price_uusd
            for user_id in chosen:
                autotopup.configure(
                    session,
                    user_id,
                    enabled=True,
                    threshold_ucr=self.threshold_ucr,
                    package_id=self.package,
                    monthly_cap_count=self.max_per_month,
                    monthly_cap_uusd=self.max_per_month * price,
                    provider="manual",
                )
        self.users.update(chosen)

    def settle(self, report: ReplayReport) -> set[int]:
        """Run the due top-up tasks, confirm the pending top-ups; return the users whose
        wallet received credits."""
        if not self.users:
            return set()

        def start(task_id: int, user_id: int | None, payload: Mapping[str, Any]) -> None:
            assert user_id is not None
            autotopup_run.run(self.factory, ManualProvider(), user_id)

        while tasks.run_due(self.factory, {autotopup.TASK: start}, limit=TASKS_PER_ROUND).done:
            pass
        p = purchases_table
        with transaction(self.factory) as session:
            waiting = [
                int(row.id)
                for row in session.execute(
                    select(p.c.id)
                    .where(p.c.origin == autotopup.ORIGIN, p.c.status == purchases.PENDING)
                    .order_by(p.c.id)
                )
            ]
        paid: set[int] = set()
        for purchase_id in waiting:
            with transaction(self.factory) as session:
                done, new = purchases.complete(
                    session, purchase_id, payment_reference=f"{self.key_prefix}:auto:{purchase_id}"
                )
            if new:
                paid.add(done.user_id)
                report.auto_top_ups += 1
                report.auto_top_up_credits_ucr += done.credits_ucr
                report.auto_top_up_paid_uusd += done.price_uusd
                if done.user_id not in self.paid_users:
                    self.paid_users.add(done.user_id)
                    report.auto_top_up_users += 1
        return paid
