"""Credit packages: what credits cost in real money (DESIGN §5). Admin-editable data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.money import UCR_PER_CREDIT, div_half_even
from modelbank.wallets.errors import PackageNotFound
from modelbank.wallets.models import packages_table as packages

DEFAULT_PACKAGES = (
    # slug, name, credits (µcr), price (µUSD), highlighted, sort order — DESIGN §5
    ("starter", "Starter", 50_000_000, 4_990_000, False, 10),
    ("popular", "Popular", 200_000_000, 17_990_000, True, 20),
    ("pro", "Pro", 500_000_000, 39_990_000, False, 30),
    ("enterprise", "Enterprise", 2_000_000_000, 139_990_000, False, 40),
)
"""The operator spec's packages; the first migration seeds them."""

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
UUSD_PER_CENT = 10_000


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """A package: ``credits_ucr`` µcr for ``price_uusd`` µUSD (a whole number of cents)."""

    id: int
    slug: str
    name: str
    credits_ucr: int
    price_uusd: int
    currency: str
    highlighted: bool
    is_active: bool
    sort_order: int
    created_at: datetime
    updated_at: datetime

    @property
    def price_cents(self) -> int:
        return self.price_uusd // UUSD_PER_CENT

    @property
    def uusd_per_credit(self) -> int:
        """Price per credit in µUSD, rounded half-even (display; never used to charge)."""
        return div_half_even(self.price_uusd * UCR_PER_CREDIT, self.credits_ucr)


def _info(row: Any) -> PackageInfo:
    return PackageInfo(
        id=int(row.id),
        slug=row.slug,
        name=row.name,
        credits_ucr=int(row.credits_ucr),
        price_uusd=int(row.price_uusd),
        currency=row.currency,
        highlighted=bool(row.highlighted),
        is_active=bool(row.is_active),
        sort_order=int(row.sort_order),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def list_packages(session: Session, *, include_inactive: bool = False) -> list[PackageInfo]:
    """Packages in display order (``sort_order``, then id); active ones unless asked."""
    query = select(packages).order_by(packages.c.sort_order, packages.c.id)
    if not include_inactive:
        query = query.where(packages.c.is_active.is_(True))
    return [_info(row) for row in session.connection().execute(query)]


def get_package(session: Session, package_id: int) -> PackageInfo:
    """The package ``package_id``. Raises :class:`PackageNotFound`."""
    row = session.connection().execute(select(packages).where(packages.c.id == package_id)).first()
    if row is None:
        raise PackageNotFound(f"no credit package {package_id}", package_id=package_id)
    return _info(row)


def _check(credits_ucr: int | None, price_uusd: int | None, slug: str | None) -> None:
    if credits_ucr is not None and credits_ucr <= 0:
        raise InvalidInput("credits_ucr must be positive")
    if price_uusd is not None:
        if price_uusd <= 0:
            raise InvalidInput("price_uusd must be positive")
        if price_uusd % UUSD_PER_CENT:
            raise InvalidInput("price_uusd must be a whole number of cents (multiple of 10,000)")
    if slug is not None and not _SLUG.match(slug):
        raise InvalidInput("slug must be 1–64 of a-z, 0-9, - and _, starting alphanumeric")


def create_package(
    session: Session,
    *,
    slug: str,
    name: str,
    credits_ucr: int,
    price_uusd: int,
    currency: str = "usd",
    highlighted: bool = False,
    sort_order: int = 0,
) -> PackageInfo:
    """Add a package. Raises :class:`InvalidInput` (non-positive amounts, a price that is not
    whole cents, a bad or taken slug)."""
    _check(credits_ucr, price_uusd, slug)
    conn = session.connection()
    if conn.execute(select(packages.c.id).where(packages.c.slug == slug)).first():
        raise InvalidInput(f"a package with slug {slug!r} exists", slug=slug)
    now = utcnow()
    new_id = conn.execute(
        insert(packages).returning(packages.c.id),
        {
            "slug": slug,
            "name": name,
            "credits_ucr": credits_ucr,
            "price_uusd": price_uusd,
            "currency": currency.lower(),
            "highlighted": highlighted,
            "is_active": True,
            "sort_order": sort_order,
            "created_at": now,
            "updated_at": now,
        },
    ).scalar_one()
    made = get_package(session, int(new_id))
    audit.record(session, "package.create", "package", made.id, after=made, now=now)
    return made


def update_package(session: Session, package_id: int, **changes: Any) -> PackageInfo:
    """Change a package's ``name``, ``credits_ucr``, ``price_uusd``, ``highlighted``,
    ``is_active`` or ``sort_order`` (None values are ignored). Purchases already started keep
    the amounts they were started with. Raises :class:`PackageNotFound`, :class:`InvalidInput`.
    """
    allowed = {"name", "credits_ucr", "price_uusd", "highlighted", "is_active", "sort_order"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"cannot change {sorted(unknown)}")
    values = {k: v for k, v in changes.items() if v is not None}
    _check(values.get("credits_ucr"), values.get("price_uusd"), None)
    before = get_package(session, package_id)
    if values:
        values["updated_at"] = utcnow()
        session.connection().execute(
            update(packages).where(packages.c.id == package_id).values(**values)
        )
        after = get_package(session, package_id)
        changed = [k for k in values if k != "updated_at"]
        audit.record(
            session,
            "package.update",
            "package",
            package_id,
            before={k: getattr(before, k) for k in changed},
            after={k: getattr(after, k) for k in changed},
        )
        return after
    return before


def seed_defaults(session: Session) -> None:
    """Insert :data:`DEFAULT_PACKAGES` whose slugs are missing (tests that reset tables)."""
    existing = set(session.connection().execute(select(packages.c.slug)).scalars())
    for slug, name, credits, price, highlighted, order in DEFAULT_PACKAGES:
        if slug not in existing:
            create_package(
                session,
                slug=slug,
                name=name,
                credits_ucr=credits,
                price_uusd=price,
                highlighted=highlighted,
                sort_order=order,
            )
