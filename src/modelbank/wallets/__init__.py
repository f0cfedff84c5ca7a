"""Wallets: credit grants into users' wallets (packages, purchases, burn-down, refunds and
alerts build on this; DESIGN §5).

Invariant: credits enter a wallet only by a ledger transfer from ``world_sales`` (purchased,
against cash) or ``platform_promotions`` (bonus), never by editing a balance.
"""
