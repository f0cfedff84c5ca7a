"""Every domain's tables, imported so that ``Base.metadata`` (and Alembic) sees them all."""

from __future__ import annotations

from modelbank.catalog.models import CatalogModel
from modelbank.db.base import Base
from modelbank.earnings.models import Beneficiary, Earning, EarningsRuleVersion, ModelStats
from modelbank.ledger.models import Account, Transfer
from modelbank.metering.models import UsageEventRow
from modelbank.pricing.models import PriceVersion
from modelbank.users.models import User

metadata = Base.metadata

__all__ = [
    "Account",
    "Beneficiary",
    "CatalogModel",
    "Earning",
    "EarningsRuleVersion",
    "ModelStats",
    "PriceVersion",
    "Transfer",
    "UsageEventRow",
    "User",
    "metadata",
]
