"""The resource pool's entry points (DESIGN §9), for the API, the CLI, the gateway and the
router. Every function takes the caller's ``Session`` first and never commits, except
:func:`~modelbank.pool.probe.probe`, which touches no database and runs between the
transaction that registers a deposit and the one that activates it.

Role modules: :mod:`~modelbank.pool.keys` (sealing, mask, fingerprint),
:mod:`~modelbank.pool.resources` (reads, deposit arithmetic), :mod:`~modelbank.pool.deposits`
(register, activate), :mod:`~modelbank.pool.probe`, :mod:`~modelbank.pool.lifecycle`
(consumption, withdrawal, failure, clawback), :mod:`~modelbank.pool.debts`,
:mod:`~modelbank.pool.market_part` (quota moved to the marketplace),
:mod:`~modelbank.pool.invariants`, :mod:`~modelbank.pool.panel`,
:mod:`~modelbank.pool.rotation`.
"""

from __future__ import annotations

from modelbank.pool.debts import open_debt, settle_debts
from modelbank.pool.deposits import activate, deposit_rates, note_probe, register
from modelbank.pool.invariants import check
from modelbank.pool.lifecycle import book_consumption, fail, withdraw
from modelbank.pool.market_part import move_to_market
from modelbank.pool.panel import PoolSummary, summary
from modelbank.pool.probe import ProbeResult, probe
from modelbank.pool.resources import (
    ResourceInfo,
    ServedModel,
    deposit_split,
    get_resource,
    list_resources,
    sealed_key,
    unconsumed_credit,
)
from modelbank.pool.rotation import rotate_keys

__all__ = [
    "PoolSummary",
    "ProbeResult",
    "ResourceInfo",
    "ServedModel",
    "activate",
    "book_consumption",
    "check",
    "deposit_rates",
    "deposit_split",
    "fail",
    "get_resource",
    "list_resources",
    "move_to_market",
    "note_probe",
    "open_debt",
    "probe",
    "register",
    "rotate_keys",
    "sealed_key",
    "settle_debts",
    "summary",
    "unconsumed_credit",
    "withdraw",
]
