"""Builders for pool tests: a secret box, a deposited and activated resource, balances."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.pool import service as pool
from modelbank.pool.models import pool_debts_table
from modelbank.pool.resources import ResourceInfo
from modelbank.secrets import SecretBox
from modelbank.users import service as users

BOX = SecretBox(SecretBox.generate_key())
"""One random Fernet key for the module's tests."""
KEY = "sk-test-0123456789abcdef7f3a"
"""A provider key that must never appear in clear anywhere."""


def deposit(
    session: Session,
    owner: int | None,
    model: int | str,
    *,
    api_key: str = KEY,
    quota_uusd: int = 10_000_000,
    market_quota_uusd: int = 0,
    activate: bool = True,
    credits_per_usd: Decimal = Decimal(100),
    box: SecretBox = BOX,
) -> ResourceInfo:
    """Register (and activate) a resource serving ``model`` as ``gpt-4o-upstream``."""
    info = pool.register(
        session,
        owner,
        provider="openai",
        base_url="https://api.example.com/v1/",
        api_key=api_key,
        models=[(model, "gpt-4o-upstream")],
        quota_uusd=quota_uusd,
        market_quota_uusd=market_quota_uusd,
        box=box,
    )
    if activate:
        info = pool.activate(session, info.id, credits_per_usd=credits_per_usd)
    return info


def wallet(session: Session, user_id: int) -> ledger.AccountBalance:
    return ledger.get_balance(session, users.get_user(session, user_id).wallet_account_id)


def platform(session: Session, code: AccountCode) -> int:
    """A platform account's posted balance (credits − debits, µcr)."""
    return ledger.get_balance(session, ledger.platform_account(session, code)).balance


def debts(session: Session, user_id: int) -> list[Any]:
    return list(
        session.connection().execute(
            select(pool_debts_table).where(pool_debts_table.c.user_id == user_id)
        )
    )


def open_debt_total(session: Session) -> int:
    return int(
        session.connection()
        .execute(select(func.coalesce(func.sum(pool_debts_table.c.remaining_ucr), 0)))
        .scalar_one()
    )
