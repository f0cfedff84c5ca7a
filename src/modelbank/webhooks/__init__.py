"""Outgoing webhooks through a transactional outbox.

A domain that changes something calls :func:`modelbank.webhooks.service.emit` in its own
transaction: the event row and one pending delivery per subscribed endpoint commit (or roll
back) with the change. A job (:func:`modelbank.webhooks.delivery.deliver_due`) later POSTs
each delivery, signed with the endpoint's secret (the Standard Webhooks scheme: HMAC-SHA256
over ``id.timestamp.body``), retrying with exponential backoff, and logs every attempt.

Invariants: a delivery is ``pending`` (with ``next_attempt_at``), ``delivered`` or
``failed`` (both final, ``next_attempt_at`` NULL); ``attempts`` equals the number of claims
(each normally leaves one row in ``webhook_attempts``); signing secrets are stored encrypted
(:mod:`modelbank.secrets`).
"""
