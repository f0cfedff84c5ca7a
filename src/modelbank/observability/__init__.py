"""Observability (issue 16 part 5): Prometheus metrics (:mod:`.metrics`) and structured JSON
logs with a request id (:mod:`.logs`). Free of HTTP frameworks: the domain packages count
through it (charges, group-commit batches) and the API serves it (``/metrics``)."""
