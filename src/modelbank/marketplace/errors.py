"""Marketplace errors (DESIGN §10). The API maps their codes to HTTP statuses in one place,
``api/errors.py`` (state conflicts are 409, missing or not visible 404, bad input 422).

Tree::

    DomainError
    ├── NotFound
    │   ├── MarketListingNotFound   (code: market_listing_not_found)
    │   ├── MarketOrderNotFound     (code: market_order_not_found)
    │   ├── AllocationNotFound      (code: allocation_not_found)
    │   └── DisputeNotFound         (code: dispute_not_found)
    ├── InvalidInput
    │   ├── InvalidListing          (code: invalid_listing)   bad quantity, price, kind…
    │   ├── InvalidFill             (code: invalid_fill)      below min fill, above left…
    │   ├── OwnMarketListing        (code: own_market_listing) a seller buying their own
    │   ├── QuotaUnavailable        (code: market_quota_unavailable) market part too small
    │   └── ResourceNotListable     (code: resource_not_listable) not active/probed/healthy
    ├── MarketListingState          (code: market_listing_state) not open / expired
    ├── MarketPriceChanged          (code: market_price_changed) dearer than the buyer's limit
    ├── AllocationState             (code: allocation_state) not active / already closed
    └── DisputeState                (code: dispute_state) already resolved
"""

from __future__ import annotations

from modelbank.errors import DomainError, InvalidInput, NotFound


class MarketListingNotFound(NotFound):
    """No marketplace listing with that id visible to the caller. Context: ``listing_id``."""

    code = "market_listing_not_found"


class MarketOrderNotFound(NotFound):
    """No order with that id visible to the caller. Context: ``order_id``."""

    code = "market_order_not_found"


class AllocationNotFound(NotFound):
    """No allocation with that id visible to the caller. Context: ``allocation_id``."""

    code = "allocation_not_found"


class DisputeNotFound(NotFound):
    """No dispute with that id visible to the caller. Context: ``dispute_id``."""

    code = "dispute_not_found"


class InvalidListing(InvalidInput):
    """A listing that cannot be created or edited: kind, quantity, min fill, price, expiry,
    a stake listing without model or a quota listing without resource."""

    code = "invalid_listing"


class InvalidFill(InvalidInput):
    """A buy whose quantity is below the listing's minimum fill, above what is left, or not
    a positive integer. Context: ``quantity``, ``min_fill``, ``available``."""

    code = "invalid_fill"


class OwnMarketListing(InvalidInput):
    """A seller tried to buy their own listing. Context: ``listing_id``."""

    code = "own_market_listing"


class QuotaUnavailable(InvalidInput):
    """The resource's market part does not have that much quota unlisted and unsold.
    Context: ``resource_id``, ``market_quota_uusd``, ``reserved_uusd``, ``quantity``."""

    code = "market_quota_unavailable"


class ResourceNotListable(InvalidInput):
    """Quota can only be listed on the seller's own resource that passed its probe, is
    ``active`` and whose breaker is closed. Context: ``resource_id``, ``status``."""

    code = "resource_not_listable"


class MarketListingState(DomainError):
    """The listing is not open (filled, cancelled, expired, closed). Context:
    ``listing_id``, ``status``."""

    code = "market_listing_state"


class MarketPriceChanged(DomainError):
    """The listing's unit price is above the ``max_unit_price_ucr`` the buyer sent (the
    seller re-priced it meanwhile). Context: ``listing_id``, ``unit_price_ucr``,
    ``max_unit_price_ucr``."""

    code = "market_price_changed"


class AllocationState(DomainError):
    """The allocation is not in a state that allows this (a dispute on a closed one).
    Context: ``allocation_id``, ``status``."""

    code = "allocation_state"


class DisputeState(DomainError):
    """The dispute was already resolved. Context: ``dispute_id``, ``status``."""

    code = "dispute_state"
