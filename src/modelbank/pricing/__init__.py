"""Pricing: markups, demand, per-operation prices and versioned prices (DESIGN §4).

Invariants: a price version is never edited (a change is a new version with a later
``effective_from``); every rate is an exact ``Decimal``; amounts are rounded once, at posting.
"""
