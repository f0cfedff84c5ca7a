"""The ``manual`` payment provider (DESIGN §5): for operators without Stripe and for tests.
No checkout page; an admin confirms the payment through the wallet service."""

from __future__ import annotations

from modelbank.wallets.payment_types import Checkout, CheckoutRequest


class ManualProvider:
    """No payment page: an operator confirms the payment (through the wallet service)."""

    name: str = "manual"

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Return ``Checkout("manual", "manual_<purchase_id>", None)``; never fails."""
        return Checkout(
            provider=self.name,
            external_id=f"manual_{request.purchase_id}",
            checkout_url=None,
        )
