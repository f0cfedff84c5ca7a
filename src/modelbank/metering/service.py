"""The metering API in one import (DESIGN §6): ``from modelbank.metering import service as
metering`` then ``metering.charge(...)``, ``metering.charge_batch(...)``.

The pipeline lives in role-named modules of this package; start at
:mod:`modelbank.metering.pipeline`:

* :mod:`~modelbank.metering.events`: usage events, results, validation, request hash;
* :mod:`~modelbank.metering.context`: the batch context, loaded once per batch;
* :mod:`~modelbank.metering.decide`: one event → a charge line or a typed rejection;
* :mod:`~modelbank.metering.post`: set-based writes of a batch's lines;
* :mod:`~modelbank.metering.replays`: idempotent replays and conflicts;
* :mod:`~modelbank.metering.capture` and :mod:`~modelbank.metering.refunds`: completing a
  hold as a charge, and undoing a charge;
* :mod:`~modelbank.metering.group`: group commit of single events.
"""

from __future__ import annotations

from modelbank.metering.events import (
    MAX_BATCH_EVENTS,
    MAX_KEY_LENGTH,
    METADATA_TEXT_LIMIT,
    ChargeResult,
    UsageEvent,
    request_hash,
    validate,
)
from modelbank.metering.pipeline import charge, charge_batch, charge_batch_with_errors
from modelbank.metering.records import UsageRecord, get_usage

__all__ = [
    "MAX_BATCH_EVENTS",
    "MAX_KEY_LENGTH",
    "METADATA_TEXT_LIMIT",
    "ChargeResult",
    "UsageEvent",
    "UsageRecord",
    "charge",
    "charge_batch",
    "charge_batch_with_errors",
    "get_usage",
    "request_hash",
    "validate",
]
