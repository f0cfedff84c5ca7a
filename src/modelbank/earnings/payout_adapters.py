"""The payout adapter seam: how the money of a payout reaches the creator (DESIGN §7).

A payout is first a ledger hold on the creator's earnings account (see
:mod:`modelbank.earnings.payouts`); an adapter is what moves the cash. Each payout row
records the adapter's :attr:`~PayoutAdapter.name`. Adapters:

* :class:`ManualAdapter` (``manual``, the only one available): does nothing. An operator pays
  the creator outside modelbank (bank transfer, PayPal…) and then completes the payout with
  the reference of that payment, or fails it.
* :class:`StripeConnectAdapter` (``stripe_connect``): the documented interface of an
  automatic adapter, not an implementation; it refuses with ``payout_adapter_unavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from modelbank.earnings.errors import PayoutAdapterUnavailable

if TYPE_CHECKING:
    from modelbank.earnings.payouts import PayoutInfo

AdapterState = Literal["pending", "completed", "failed"]
"""What the adapter did: ``pending`` (nothing final yet: a person or a later provider event
completes or fails the payout), ``completed`` (the money left: complete it with the
reference) or ``failed`` (the provider refused: fail it with the reason)."""


@dataclass(frozen=True, slots=True)
class AdapterResult:
    """An adapter's answer to :meth:`PayoutAdapter.send`: the provider's reference of the
    payment (None when there is none yet), the :data:`AdapterState`, and why it failed."""

    external_reference: str | None
    state: AdapterState
    reason: str | None = None


class PayoutAdapter(Protocol):
    """Moves a payout's money to its creator.

    ``send`` is given a pending payout (``amount_ucr`` µcr held on the creator's earnings
    account). It must be idempotent per ``payout.id`` (a retry must not pay twice: use the
    id as the provider's idempotency key) and must not touch the database; the payouts
    service applies its :class:`AdapterResult` (pending → stays pending with the reference,
    completed → :func:`~modelbank.earnings.payouts.complete`, failed →
    :func:`~modelbank.earnings.payouts.fail`). Raises a
    :class:`~modelbank.errors.DomainError` when it cannot even try (nothing is then written).
    """

    name: str

    def send(self, payout: PayoutInfo) -> AdapterResult: ...


class ManualAdapter:
    """``manual``: sends nothing. The payout stays pending until an admin, having paid the
    creator outside modelbank, completes it with that payment's reference (or fails it)."""

    name = "manual"

    def send(self, payout: PayoutInfo) -> AdapterResult:
        """Nothing to do: ``AdapterResult(None, "pending")``."""
        return AdapterResult(external_reference=None, state="pending")


class StripeConnectAdapter:
    """``stripe_connect``: the documented interface of an automatic adapter, **not an
    implementation** — :meth:`send` raises :class:`PayoutAdapterUnavailable`.

    What an implementation would do, for a pending payout of ``amount_ucr`` µcr:

    1. Find the creator's connected account (``acct_…``, from Stripe Connect onboarding).
       modelbank has no table for it yet: that is a schema change (``user_id →
       stripe_account_id``) and an onboarding flow, both out of scope here.
    2. Convert at the payout rate: ``amount_uusd = round_half_even(amount_ucr /
       credits_per_usd)`` (:func:`~modelbank.earnings.payouts.uusd_at`), then to whole cents
       at the provider edge (DESIGN §2), rounding down so a creator is never paid more than
       they earned: ``cents = amount_uusd // 10_000``.
    3. ``stripe.Transfer.create(amount=cents, currency="usd", destination=acct,
       transfer_group=f"payout_{id}", metadata={"payout_id": id},
       idempotency_key=f"payout-{id}")``: a transfer from the platform's Stripe balance to
       the connected account (Stripe then pays it out to the creator's bank on its schedule).
    4. Return ``AdapterResult(transfer.id, "completed")``; a card/balance error
       (``stripe.StripeError``) becomes ``AdapterResult(None, "failed", reason=…)`` so the
       hold is voided and the credits go back to the creator's earnings.

    Because it makes a network call, a real adapter must run outside the database
    transaction that created the payout (e.g. from the jobs runner, for pending payouts of
    its ``adapter``), then apply the result with
    :func:`~modelbank.earnings.payouts.apply_adapter_result`.
    """

    name = "stripe_connect"

    def send(self, payout: PayoutInfo) -> AdapterResult:
        """Always raises :class:`PayoutAdapterUnavailable` (see the class docstring)."""
        raise PayoutAdapterUnavailable(
            "the stripe_connect payout adapter is a documented interface, not implemented:"
            " it would send a stripe.Transfer to the creator's connected account. Use the"
            " manual adapter: pay outside modelbank, then complete the payout with the"
            " payment's reference",
            adapter=self.name,
        )


ADAPTERS: dict[str, type[ManualAdapter] | type[StripeConnectAdapter]] = {
    ManualAdapter.name: ManualAdapter,
    StripeConnectAdapter.name: StripeConnectAdapter,
}
"""Known adapters by name."""


def adapter_for(name: str) -> PayoutAdapter:
    """The adapter called ``name``. Raises :class:`PayoutAdapterUnavailable` for an unknown
    name (``stripe_connect`` is returned, and refuses when asked to send)."""
    found = ADAPTERS.get(name)
    if found is None:
        raise PayoutAdapterUnavailable(
            f"unknown payout adapter {name!r}: expected one of {', '.join(ADAPTERS)}",
            adapter=name,
        )
    return found()
