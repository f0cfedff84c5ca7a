"""Rate limits (issue 16 part 7): requests per second and tokens per minute, per API key
and per user, the user's limits chosen by a plan keyed by credit balance
(:mod:`.plans`), counted in fixed windows in memory, the database or Redis (:mod:`.store`),
refused with :class:`~modelbank.ratelimits.errors.RateLimited` (HTTP 429 with
``Retry-After``). The HTTP layer calls :class:`~modelbank.ratelimits.service.Limiter`."""
