"""The deposit probe (DESIGN §9): one inexpensive authenticated call, ``GET {base_url}/models``,
before a key enters the pool. It runs outside any database transaction.

Outcomes, and what a deposit does with them:

* ``ok`` (2xx): the key works → activate.
* ``refused`` (401, 403, another 4xx such as 404 for a wrong base URL, a redirect, or a
  URL that cannot be requested at all): the upstream will not serve this key at this URL →
  the resource ``failed``, which frees the key for a corrected deposit.
* ``unreachable`` (connect error, timeout, 429, 5xx, a broken response): may pass later →
  the resource stays ``pending`` with the reason; retrying the deposit (same
  ``Idempotency-Key``) probes again. Nothing is credited meanwhile.

The key travels only in the ``Authorization`` header; reasons are built from the status code
and the kind of failure, never from exception text (which may quote URLs or headers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import httpx

PROBE_TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=5.0, pool=5.0)
"""Seconds: a provider that needs longer than this to list its models is not healthy
enough to enter the pool now (the deposit stays pending and may be retried)."""
MAX_LISTED_MODELS = 10_000
"""Model names read from the listing at most (bounded memory for a hostile upstream)."""

Outcome = Literal["ok", "refused", "unreachable"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the probe saw: ``outcome``, the HTTP status (None without a response), a short
    ``reason`` safe to store and show, the latency in ms, and the upstream model ids it
    listed (None when the body was not an OpenAI-style ``{"data": [{"id": …}]}``)."""

    outcome: Outcome
    status_code: int | None
    reason: str
    latency_ms: float
    models: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _listed(response: httpx.Response) -> tuple[str, ...] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    names = [item.get("id") for item in data[:MAX_LISTED_MODELS] if isinstance(item, dict)]
    return tuple(name for name in names if isinstance(name, str))


def classify(status_code: int) -> Outcome:
    """The probe outcome of an HTTP status (module docstring)."""
    if 200 <= status_code < 300:
        return "ok"
    if status_code == 429 or status_code >= 500:
        return "unreachable"
    return "refused"


async def probe(base_url: str, api_key: str, *, client: httpx.AsyncClient) -> ProbeResult:
    """``GET {base_url}/models`` with ``Authorization: Bearer <api_key>`` through ``client``
    (the app's, or a test's ``httpx.MockTransport``), with :data:`PROBE_TIMEOUT` and no
    redirects followed. Never raises for the upstream's failures: they are outcomes."""
    started = time.perf_counter()
    url = f"{base_url.rstrip('/')}/models"
    try:
        response = await client.get(
            url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=PROBE_TIMEOUT,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        return ProbeResult("unreachable", None, "probe: timed out", _since(started))
    except httpx.TransportError as exc:  # connect, read, protocol errors
        kind = type(exc).__name__
        return ProbeResult("unreachable", None, f"probe: network error ({kind})", _since(started))
    except (httpx.InvalidURL, ValueError):  # a host httpx cannot encode (bad IDNA label)
        return ProbeResult("refused", None, "probe: the base URL cannot be requested", 0.0)
    latency = _since(started)
    status = response.status_code
    outcome = classify(status)
    if outcome == "ok":
        return ProbeResult("ok", status, f"probe: HTTP {status}", latency, _listed(response))
    if status in (401, 403):
        reason = f"probe: the provider refused the key (HTTP {status})"
    elif 300 <= status < 400:
        reason = f"probe: redirected (HTTP {status}); give the final base URL"
    else:
        reason = f"probe: HTTP {status} from {{base_url}}/models"
    return ProbeResult(outcome, status, reason, latency)


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
