"""``modelbank demo --gateway``: the request path end to end (DESIGN §9, §15).

Three fake upstreams run in-process (one steady, one slow, one flaky), modelbank itself is
served by uvicorn on loopback, users deposit the upstreams' keys through the API and earn
deposit credits, and part of the real Azure code trace is replayed through ``/v1`` with the
official ``openai`` client at the trace's token counts. The report gives requests served,
failed and refused, each resource's routing share, failovers, breaker states, depositors'
earnings, the platform's spread and fees, and the ledger check.

Modules: :mod:`~modelbank.demo_gateway.servers` (uvicorn in threads, the upstreams' roles),
:mod:`~modelbank.demo_gateway.run` (the cast, the deposits, the replay) and
:mod:`~modelbank.demo_gateway.report` (figures from the database, rendering).
"""

from __future__ import annotations

from modelbank.demo_gateway.report import GatewayReport, emit_report
from modelbank.demo_gateway.run import DEFAULT_EVENTS, PROMPT_CAP_TOKENS, run_gateway_demo

__all__ = [
    "DEFAULT_EVENTS",
    "PROMPT_CAP_TOKENS",
    "GatewayReport",
    "emit_report",
    "run_gateway_demo",
]
