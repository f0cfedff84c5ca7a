"""Every domain's tables, imported so that ``Base.metadata`` (and Alembic) sees them all."""

from __future__ import annotations

from modelbank.audit.models import AuditRecord
from modelbank.auth.models import ApiKey, WebSession
from modelbank.catalog.models import CatalogModel, ModelAccess
from modelbank.chain.models import ChainBlock
from modelbank.db.base import Base
from modelbank.db.epoch import ReferenceEpoch
from modelbank.earnings.models import (
    Beneficiary,
    Earning,
    EarningsRuleVersion,
    ModelStats,
    Payout,
    StakeListing,
)
from modelbank.idempotency.models import IdempotentRequest
from modelbank.ledger.models import Account, Transfer
from modelbank.marketplace.models import (
    MarketAllocation,
    MarketAllocationUse,
    MarketBundleItem,
    MarketDispute,
    MarketListing,
    MarketOrder,
)
from modelbank.metering.models import UsageEventRow
from modelbank.metering.rollups import CreatorDay, ModelDay, UserDay
from modelbank.notices.models import NoticeRecipient
from modelbank.platform.models import DeploymentKey, PlatformSetting
from modelbank.pool.models import PoolDebt, Resource, ResourceHealth, ResourceModel, RouteLog
from modelbank.pricing.models import PriceVersion
from modelbank.ratelimits.models import RateLimitCounter, RateLimitPlan
from modelbank.tasks.models import Task
from modelbank.users.models import User
from modelbank.wallets.billing_models import (
    GrantRollover,
    Plan,
    PromoCode,
    PromoRedemption,
    Referral,
    ReferralCode,
    Subscription,
    SubscriptionPeriod,
)
from modelbank.wallets.models import (
    AutoTopup,
    CreditPackage,
    EarningsDebt,
    Grant,
    GrantBurn,
    PaymentEventRow,
    Purchase,
    UsageRefund,
    WalletAlert,
    WalletHold,
)
from modelbank.webhooks.models import (
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

metadata = Base.metadata

__all__ = [
    "Account",
    "ApiKey",
    "AuditRecord",
    "AutoTopup",
    "Beneficiary",
    "CatalogModel",
    "ChainBlock",
    "CreatorDay",
    "CreditPackage",
    "DeploymentKey",
    "Earning",
    "EarningsDebt",
    "EarningsRuleVersion",
    "Grant",
    "GrantBurn",
    "GrantRollover",
    "IdempotentRequest",
    "MarketAllocation",
    "MarketAllocationUse",
    "MarketBundleItem",
    "MarketDispute",
    "MarketListing",
    "MarketOrder",
    "ModelAccess",
    "ModelDay",
    "ModelStats",
    "NoticeRecipient",
    "OutboxEvent",
    "PaymentEventRow",
    "Payout",
    "Plan",
    "PlatformSetting",
    "PoolDebt",
    "PriceVersion",
    "PromoCode",
    "PromoRedemption",
    "Purchase",
    "RateLimitCounter",
    "RateLimitPlan",
    "ReferenceEpoch",
    "Referral",
    "ReferralCode",
    "Resource",
    "ResourceHealth",
    "ResourceModel",
    "RouteLog",
    "StakeListing",
    "Subscription",
    "SubscriptionPeriod",
    "Task",
    "Transfer",
    "UsageEventRow",
    "UsageRefund",
    "User",
    "UserDay",
    "WalletAlert",
    "WalletHold",
    "WebSession",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "metadata",
]
