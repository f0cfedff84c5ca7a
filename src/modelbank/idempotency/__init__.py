"""Stored responses of credit-moving requests, replayed for a repeated Idempotency-Key."""
