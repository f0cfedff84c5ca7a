"""Creator, user and admin dashboards read from the daily rollups (DESIGN §8, §16).

Every figure comes from ``rollup_model_day``, ``rollup_user_day`` and ``rollup_creator_day``
(:mod:`modelbank.metering.rollups`, maintained in the charge's transaction) plus small tables
(models, users, payouts, stakes, model access, ledger accounts), never from a scan of
``usage_events``: a dashboard costs about the same at ten thousand or ten million usage rows
(``bench/analytics.py`` measures it).

Periods are the last N UTC days including today (``7d``, ``30d``, ``90d``, ``365d``); a
row's day is the UTC day on which its charge or refund was posted. One user's rows are read
with ``day IN (…each day…) AND user_id = ?``: one primary-key probe per day, since the rollup
keys start with the day. Amounts in µcr, provider cost in µUSD. "Net" means after refunds:
spend net of what was refunded, earnings net of what refunds reversed (including reversals
still owed as debts, :mod:`modelbank.wallets.refunds`).

* :func:`creator_analytics` — a creator's earnings, uses, tokens, top models, daily series,
  payout history, pending and available amounts (:mod:`.creator`).
* :func:`user_analytics` — spend by model, category and usage type, daily series, the
  original model-analytics overview, stakes held and paid out (:mod:`.user`).
* :func:`admin_analytics` — revenue, provider cost and margin per model, category and day,
  top creators, payouts by status, earnings owed (:mod:`.admin`).
"""

from __future__ import annotations

from modelbank.analytics.dashboards._common import PERIOD_DAYS, Window, window
from modelbank.analytics.dashboards.admin import (
    AdminAnalytics,
    CategoryFigures,
    CreatorFigures,
    DayFigures,
    Figures,
    ModelFigures,
    PayoutStatusFigures,
    admin_analytics,
)
from modelbank.analytics.dashboards.creator import (
    CreatorAnalytics,
    CreatorDayLine,
    CreatorModelLine,
    PayoutLine,
    creator_analytics,
)
from modelbank.analytics.dashboards.user import (
    Portfolio,
    SpendLine,
    StakeLine,
    UserAnalytics,
    UserDayLine,
    user_analytics,
)

__all__ = [
    "PERIOD_DAYS",
    "AdminAnalytics",
    "CategoryFigures",
    "CreatorAnalytics",
    "CreatorDayLine",
    "CreatorFigures",
    "CreatorModelLine",
    "DayFigures",
    "Figures",
    "ModelFigures",
    "PayoutLine",
    "PayoutStatusFigures",
    "Portfolio",
    "SpendLine",
    "StakeLine",
    "UserAnalytics",
    "UserDayLine",
    "Window",
    "admin_analytics",
    "creator_analytics",
    "user_analytics",
    "window",
]
