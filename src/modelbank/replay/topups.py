"""Users who top up (DESIGN §5, §15): when a replayed user's balance runs low, or a request is
refused for want of credits, the user buys a credit package through the ``manual`` payment
provider and the operator confirms the payment, as an operator without Stripe would
(``POST /api/v1/admin/purchases/{id}/confirm`` runs the same two service calls). The
purchase's credits arrive as a ``purchased`` grant whose cost basis is the price paid."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from modelbank.db.engine import transaction
from modelbank.errors import InvalidInput
from modelbank.money import UCR_PER_CREDIT
from modelbank.wallets import packages, purchases
from modelbank.wallets.providers import ManualProvider


@dataclass(frozen=True, slots=True)
class TopUpPolicy:
    """When and how replayed users buy credits.

    A user tops up when a charge leaves their balance below ``low_balance_ucr`` µcr, or when
    a request is rejected for insufficient funds (that request is then retried once, as a
    user retries after paying). Each top-up buys the package ``package`` (slug). A user buys
    at most ``max_per_user`` packages in one replay; after that their requests that find the
    wallet empty stay rejected.
    """

    package: str = "pro"
    low_balance_ucr: int = 50 * UCR_PER_CREDIT
    max_per_user: int = 6
    auto_percent: int = 0
    """Share of users (%, deterministic by id) who turn auto top-up on instead of buying by
    hand: the same package, threshold and count, through the real auto top-up path
    (:mod:`modelbank.replay.autotopups`)."""

    def __post_init__(self) -> None:
        if not 0 <= self.auto_percent <= 100:
            raise InvalidInput("auto_percent must be 0–100", auto_percent=self.auto_percent)
        if self.low_balance_ucr < 0 or self.max_per_user < 0:
            raise InvalidInput(
                "top-up threshold and count must be ≥ 0",
                low_balance_ucr=self.low_balance_ucr,
                max_per_user=self.max_per_user,
            )


@dataclass(frozen=True, slots=True)
class TopUp:
    """One confirmed purchase: ``credits_ucr`` µcr bought for ``price_uusd`` µUSD."""

    user_id: int
    purchase_id: int
    credits_ucr: int
    price_uusd: int


def package_id(factory: sessionmaker[Session], slug: str) -> int:
    """The id of the active package ``slug``. Raises :class:`InvalidInput` naming the
    packages on sale when there is none."""
    with transaction(factory) as session:
        on_sale = packages.list_packages(session)
    for package in on_sale:
        if package.slug == slug:
            return package.id
    names = ", ".join(p.slug for p in on_sale) or "none"
    raise InvalidInput(f"no package {slug!r} on sale (on sale: {names})", package=slug)


def buy_and_confirm(
    factory: sessionmaker[Session], user_id: int, package: int, *, reference: str
) -> TopUp:
    """The user buys ``package`` through the manual provider (a pending purchase), then the
    operator confirms the payment (``reference`` is recorded as its payment reference): the
    credits are granted once. Raises what :func:`modelbank.wallets.purchases.start` and
    :func:`~modelbank.wallets.purchases.complete` raise."""
    pending = purchases.start(
        lambda: transaction(factory),
        ManualProvider(),
        user_id,
        package,
        success_url="",
        cancel_url="",
    )
    with transaction(factory) as session:
        done, _ = purchases.complete(session, pending.id, payment_reference=reference)
    return TopUp(user_id, done.id, done.credits_ucr, done.price_uusd)
