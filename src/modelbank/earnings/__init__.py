"""Creator earnings: rules, beneficiaries, per-model aggregates (DESIGN §7).

Invariants: a beneficiary never earns from their own usage; a rounding remainder of a split
stays with the platform (never created, never lost); per-model aggregates change in the
same transaction as the charge that caused them.
"""
