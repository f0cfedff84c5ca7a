"""Usage metering: usage events, the charging pipeline and batch ingestion (DESIGN §6).

Invariants: an event with a given idempotency key is charged at most once; a charge, its
earnings and its usage row are written in one transaction or not at all; a rejected event
(insufficient funds, unknown model) writes nothing.
"""
