"""Replay a usage trace through the full pipeline (DESIGN §15): set up a catalog from real
provider prices, users with starting credits and creators, then charge every request in
batches and report revenue, cost, earnings, top-ups and the ledger's health.

The package orchestrates the domains through their services only; ``modelbank replay`` and
``modelbank demo`` are thin over it. Its modules:

* :mod:`~modelbank.replay.catalog`: the models (chosen from a price source, or named by the
  trace and created from it) and their creators;
* :mod:`~modelbank.replay.cast`: the users, created by external id as they appear;
* :mod:`~modelbank.replay.topups`: users who run low buy a package (manual provider,
  confirmed by the operator step);
* :mod:`~modelbank.replay.run`: the batch loop and the ledger check;
* :mod:`~modelbank.replay.report`: the figures printed.
"""

from __future__ import annotations

from modelbank.replay.cast import (
    WELCOME_BONUS_UCR,
    StartingCredits,
    admit_users,
    credits,
    ensure_users,
)
from modelbank.replay.catalog import (
    PREFERRED_CHAT_MODELS,
    CatalogEntry,
    assign_creators,
    chat_catalog,
    cost_rates,
    ensure_models,
    entry_from_source,
    find_cost,
    operation_price,
)
from modelbank.replay.report import ModelTally, ReplayReport
from modelbank.replay.run import BATCH_EVENTS, replay, replay_catalog
from modelbank.replay.topups import TopUp, TopUpPolicy, buy_and_confirm

__all__ = [
    "BATCH_EVENTS",
    "PREFERRED_CHAT_MODELS",
    "WELCOME_BONUS_UCR",
    "CatalogEntry",
    "ModelTally",
    "ReplayReport",
    "StartingCredits",
    "TopUp",
    "TopUpPolicy",
    "admit_users",
    "assign_creators",
    "buy_and_confirm",
    "chat_catalog",
    "cost_rates",
    "credits",
    "ensure_models",
    "ensure_users",
    "entry_from_source",
    "find_cost",
    "operation_price",
    "replay",
    "replay_catalog",
]
