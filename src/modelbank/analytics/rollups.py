"""The incremental rollup writers, by their old path: they live in
:mod:`modelbank.metering.rollups` (the charging pipeline, a layer below analytics, calls
them). Nothing in the repository imports this path any more; the re-export keeps
``modelbank.analytics.rollups.record_charges`` working for one step, then it can go."""

from __future__ import annotations

from modelbank.metering.rollups import ChargeFact, record_charges, record_refund

__all__ = ["ChargeFact", "record_charges", "record_refund"]
