"""One batch's answers while the pipeline runs: a result (and, for rejections, the error) per
event, in the caller's order, and the request hash of each valid event."""

from __future__ import annotations

from collections.abc import Sequence

from modelbank.errors import DomainError
from modelbank.metering.events import ChargeResult, UsageEvent, rejected
from modelbank.observability.metrics import REJECTIONS


class Batch:
    """The events of one :func:`~modelbank.metering.pipeline.charge_batch` call and their
    answers so far. ``raise_errors``: the first rejection is raised instead of recorded
    (:func:`~modelbank.metering.pipeline.charge`, a batch of one)."""

    __slots__ = ("errors", "events", "hashes", "raise_errors", "results")

    def __init__(self, events: Sequence[UsageEvent], *, raise_errors: bool = False) -> None:
        count = len(events)
        self.events = events
        self.raise_errors = raise_errors
        self.results: list[ChargeResult | None] = [None] * count
        self.errors: list[DomainError | None] = [None] * count
        self.hashes: list[str] = [""] * count

    def reject(self, index: int, error: DomainError) -> None:
        """Answer event ``index`` with ``error`` (raised at once with ``raise_errors``).
        Counted at once (a rejection writes nothing, whatever the transaction does)."""
        REJECTIONS.labels(error.code).inc()
        if self.raise_errors:
            raise error
        self.errors[index] = error
        self.results[index] = rejected(self.events[index], error.code, str(error))

    def answer(self, index: int, result: ChargeResult) -> None:
        """Answer event ``index`` with a ``charged`` or ``replayed`` result."""
        self.results[index] = result

    def open(self) -> list[int]:
        """Indexes of the events not answered yet, in order."""
        return [i for i, r in enumerate(self.results) if r is None]

    def answers(self) -> tuple[list[ChargeResult], list[DomainError | None]]:
        """Every event's result and error, in order. All events must be answered."""
        results = [r for r in self.results if r is not None]
        assert len(results) == len(self.results), "an event was left unanswered"
        return results, self.errors
