"""Resource pool errors (DESIGN §9). None of them ever carries a provider key: messages and
context name resources by id, keys by mask or fingerprint at most.

Tree::

    DomainError
    ├── NotFound
    │   └── ResourceNotFound       (code: resource_not_found)  no such resource, or not yours
    ├── InvalidInput
    │   └── InvalidResource        (code: invalid_resource)    bad base URL, quota, models…
    ├── ResourceKeyExists          (code: resource_key_exists) that key is already in the pool
    ├── ResourceState              (code: resource_state)      not allowed in this status
    ├── DepositCreditSpent         (code: deposit_credit_spent) a move's credit is spent
    └── PoolSettingsInvalid        (code: pool_settings_invalid) deposit rates out of range
"""

from __future__ import annotations

from modelbank.errors import DomainError, InvalidInput, NotFound


class ResourceNotFound(NotFound):
    """No resource with that id visible to the caller (another user's is not revealed)."""

    code = "resource_not_found"


class InvalidResource(InvalidInput):
    """A deposit that cannot be accepted: base URL, quota split or served models."""

    code = "invalid_resource"


class ResourceKeyExists(DomainError):
    """The key (by fingerprint) is already live in the pool: pending, active, depleted or
    suspended. Withdraw that resource first. Context: ``resource_id`` when the caller may see
    it (never the key)."""

    code = "resource_key_exists"


class ResourceState(DomainError):
    """The operation is not allowed in the resource's status (activating a withdrawn
    resource, withdrawing a failed one). Context: ``resource_id``, ``status``."""

    code = "resource_state"


class PoolSettingsInvalid(DomainError):
    """``pool.deposit_credit_bps`` / ``pool.fee_bps`` are outside 0…10,000 or sum past
    10,000 (an operator's misconfiguration, not the caller's)."""

    code = "pool_settings_invalid"


class DepositCreditSpent(DomainError):
    """Moving quota from the pool part to the market part reverses its deposit credit, and
    the depositor's wallet no longer holds that much (DESIGN §10). Context: ``resource_id``,
    ``credit_ucr``, ``available_ucr``."""

    code = "deposit_credit_spent"
