"""The OpenAI-compatible gateway (DESIGN §9): every call is held, routed to a pool resource
with failover, and charged for the usage the upstream reports.

The HTTP surface (``/v1/…``) is :mod:`modelbank.api.gateway`; this package holds what it
runs: the hold's upper bound (:mod:`.estimate`), reading usage from upstream answers and
streams (:mod:`.usage`), the upstream calls (:mod:`.upstream`) and the hold → route →
capture flow (:mod:`.service`).
"""
