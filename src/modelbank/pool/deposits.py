"""Depositing a provider key (DESIGN §9): register it (``pending``), probe it outside any
transaction (:mod:`modelbank.pool.probe`), then activate it, crediting the depositor.

Activation of a user's resource posts, from ``pool_deposits`` (the platform's liability for
the quota it now holds), the pool part's credit value split by the platform settings
``pool.deposit_credit_bps`` (default 9,000: a ``deposit`` grant to the depositor's wallet)
and ``pool.fee_bps`` (default 1,000: to ``platform_fees``). The market part is never
credited. Platform resources (``owner_id`` NULL) get nothing. Every ledger posting names the
resource (``ref_type='resource'``) and is keyed by it (``pool:deposit:<id>``,
``pool:fee:<id>``), so an activation retried changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlsplit

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.db.base import utcnow
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.money import DEFAULT_CREDITS_PER_USD
from modelbank.platform import service as platform_settings
from modelbank.pool import keys
from modelbank.pool.errors import InvalidResource, ResourceKeyExists, ResourceState
from modelbank.pool.models import LIVE_STATUSES
from modelbank.pool.models import resource_models_table as served
from modelbank.pool.models import resources_table as resources
from modelbank.pool.resources import (
    DEFAULT_DEPOSIT_CREDIT_BPS,
    DEFAULT_FEE_BPS,
    DEPOSIT_CREDIT_BPS_KEY,
    FEE_BPS_KEY,
    ResourceInfo,
    deposit_split,
    get_resource,
)
from modelbank.secrets import SecretBox
from modelbank.users import service as users
from modelbank.wallets import alerts, grants

MAX_KEY_LENGTH = 500
"""Longest provider key accepted (real ones are under 200 characters)."""
MAX_URL_LENGTH = 500
"""Longest base URL (the column's size)."""
MAX_MODELS = 100
"""Most models one resource may serve (bounded work per deposit and per route)."""
MAX_QUOTA_UUSD = 10**15
"""Largest quota accepted: $1e9 of provider spend keeps credit values far from 2⁶³ µcr."""
MAX_REASON_LENGTH = 200
"""``status_reason`` is cut to the column's size."""

ModelSpec = tuple[int | str, str]
"""(catalog model id or slug, the upstream's name for it)."""


@dataclass(frozen=True, slots=True)
class NewResource:
    """What :func:`register` checked and will store."""

    provider: str
    base_url: str
    api_key: str
    models: tuple[tuple[int, str], ...]
    quota_uusd: int
    market_quota_uusd: int


def clean_base_url(base_url: str) -> str:
    """``base_url`` without trailing slashes, if it is an ``http(s)://host[:port][/path]``
    URL of at most :data:`MAX_URL_LENGTH` characters with no user, password, query or
    fragment (credentials belong in the key, never in a URL that is shown and logged).
    Raises :class:`InvalidResource`."""
    url = base_url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidResource("base_url is not a valid URL") from None
    if len(url) > MAX_URL_LENGTH or parts.scheme not in ("http", "https") or not host:
        raise InvalidResource(
            f"base_url must be an http:// or https:// URL with a host, at most"
            f" {MAX_URL_LENGTH} characters"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidResource("base_url must not contain credentials: send the key as api_key")
    if parts.query or parts.fragment or any(ch.isspace() for ch in url):
        raise InvalidResource("base_url must have no query, fragment or whitespace")
    return url


def check_public_host(base_url: str) -> None:
    """Refuse a ``base_url`` whose host is this machine or a private network: ``localhost``
    (and ``*.localhost``), and IP literals that are loopback, private (RFC 1918, fc00::/7),
    link-local (169.254.0.0/16: cloud metadata endpoints), unspecified, reserved or
    multicast. A user's deposit must not make the gateway call into the operator's network
    (server-side request forgery); the operator allows it with
    ``MODELBANK_POOL_PRIVATE_UPSTREAMS=true`` (self-hosted vLLM or Ollama, demos). Host
    names are not resolved here: a public name that resolves to a private address is not
    caught (keep the gateway's egress firewalled for that). Raises
    :class:`InvalidResource`."""
    host = (urlsplit(base_url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise InvalidResource("base_url must be a public host: localhost is not allowed")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
        or address.is_multicast
    ):
        raise InvalidResource(
            f"base_url must be a public host: {host} is a private or local address"
        )


def _check_key(api_key: str) -> str:
    key = api_key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidResource(f"api_key must be 1–{MAX_KEY_LENGTH} characters")
    if not key.isascii() or not key.isprintable() or any(ch.isspace() for ch in key):
        raise InvalidResource("api_key must be printable ASCII without spaces")
    return key


def _check(
    session: Session,
    *,
    provider: str,
    base_url: str,
    api_key: str,
    models: Sequence[ModelSpec],
    quota_uusd: int,
    market_quota_uusd: int,
) -> NewResource:
    name = provider.strip()
    if not 1 <= len(name) <= 64:
        raise InvalidResource("provider must be 1–64 characters")
    if not isinstance(quota_uusd, int) or not 0 < quota_uusd <= MAX_QUOTA_UUSD:
        raise InvalidResource(f"quota_uusd must be an integer in 1…{MAX_QUOTA_UUSD}")
    if not isinstance(market_quota_uusd, int) or not 0 <= market_quota_uusd <= quota_uusd:
        raise InvalidResource("market_quota_uusd must be between 0 and quota_uusd")
    if not 1 <= len(models) <= MAX_MODELS:
        raise InvalidResource(f"a resource serves 1–{MAX_MODELS} models")
    found = catalog.resolve_models(session, [ref for ref, _ in models], active_only=False)
    pairs: dict[int, str] = {}
    for ref, upstream in models:
        if ref not in found:
            raise InvalidResource(f"no model {ref!r} in the catalog", model=ref)
        upstream = upstream.strip()
        if not 1 <= len(upstream) <= 200:
            raise InvalidResource("upstream_model must be 1–200 characters", model=ref)
        model_id = found[ref].id
        if model_id in pairs:
            raise InvalidResource(f"model {ref!r} is listed twice", model=ref)
        pairs[model_id] = upstream
    return NewResource(
        provider=name,
        base_url=clean_base_url(base_url),
        api_key=_check_key(api_key),
        models=tuple(sorted(pairs.items())),
        quota_uusd=quota_uusd,
        market_quota_uusd=market_quota_uusd,
    )


def live_resource_of(session: Session, fingerprint: str) -> tuple[int, int | None] | None:
    """(id, owner) of the live resource holding the key with this fingerprint, or None."""
    row = (
        session.connection()
        .execute(
            select(resources.c.id, resources.c.owner_id).where(
                resources.c.key_fingerprint == fingerprint,
                resources.c.status.in_(LIVE_STATUSES),
            )
        )
        .first()
    )
    return None if row is None else (int(row.id), row.owner_id)


def _key_exists(owner_id: int | None, found: tuple[int, int | None] | None) -> ResourceKeyExists:
    # the id of the live resource is named only to its owner (anyone else learns nothing
    # beyond "this key is taken")
    context = {} if found is None or found[1] != owner_id else {"resource_id": found[0]}
    return ResourceKeyExists("this provider key is already in the pool", **context)


def register(
    session: Session,
    owner_id: int | None,
    *,
    provider: str,
    base_url: str,
    api_key: str,
    models: Sequence[ModelSpec],
    quota_uusd: int,
    market_quota_uusd: int = 0,
    box: SecretBox,
    private_hosts: bool = False,
    now: datetime | None = None,
) -> ResourceInfo:
    """Record a deposited key as ``pending`` (sealed under ``box``'s key) and the models it
    serves; return it. Nothing is credited until :func:`activate`, after a probe.

    ``owner_id`` None: a platform resource. ``models``: (catalog id or slug, upstream model
    name), 1–100 of them. ``quota_uusd`` > 0 µUSD of provider spend, of which
    ``market_quota_uusd`` (0…quota) is for marketplace listings. Raises
    :class:`~modelbank.users.errors.UserNotFound`, :class:`InvalidResource`,
    :class:`ResourceKeyExists` (the key is live in the pool already, also when two deposits
    race: the partial unique index decides). A user's deposit must name a public host
    (:func:`check_public_host`) unless ``private_hosts``; platform resources may name any."""
    now = now or utcnow()
    if owner_id is not None:
        users.get_user(session, owner_id)
        if not private_hosts:
            check_public_host(clean_base_url(base_url))
    spec = _check(
        session,
        provider=provider,
        base_url=base_url,
        api_key=api_key,
        models=models,
        quota_uusd=quota_uusd,
        market_quota_uusd=market_quota_uusd,
    )
    resource_id = _insert(session, owner_id, spec, box, now)
    return get_resource(session, int(resource_id))


def _insert(
    session: Session, owner_id: int | None, spec: NewResource, box: SecretBox, now: datetime
) -> int:
    """Seal the key and insert the resource and its models; return its id. Raises
    :class:`ResourceKeyExists` (the pre-check, or the unique index when deposits race)."""
    fingerprint = keys.fingerprint(spec.api_key)
    existing = live_resource_of(session, fingerprint)
    if existing is not None:
        raise _key_exists(owner_id, existing)
    token, key_id = keys.seal(box, spec.api_key)
    conn = session.connection()
    try:
        resource_id = conn.execute(
            insert(resources)
            .values(
                owner_id=owner_id,
                provider=spec.provider,
                base_url=spec.base_url,
                key_encrypted=token,
                key_id=key_id,
                key_mask=keys.mask(spec.api_key),
                key_fingerprint=fingerprint,
                status="pending",
                quota_uusd=spec.quota_uusd,
                market_quota_uusd=spec.market_quota_uusd,
                consumed_uusd=0,
                deposit_credit_ucr=0,
                fee_ucr=0,
                clawed_back_ucr=0,
                created_at=now,
                updated_at=now,
            )
            .returning(resources.c.id)
        ).scalar_one()
    except IntegrityError as exc:
        # A concurrent deposit of the same key committed between the check and the insert
        # (PostgreSQL waits on the unique index, then refuses). The driver's message names
        # the index, never the key's value (only its fingerprint is indexed).
        if "uq_resources_live_key" in str(exc.orig) or "key_fingerprint" in str(exc.orig):
            raise _key_exists(owner_id, None) from None
        raise
    conn.execute(
        insert(served),
        [
            {"resource_id": resource_id, "model_id": model_id, "upstream_model": upstream}
            for model_id, upstream in spec.models
        ],
    )
    return int(resource_id)


def deposit_rates(session: Session) -> tuple[int, int]:
    """(deposit credit bps, fee bps) from the platform settings, defaults 9,000 / 1,000."""
    return (
        platform_settings.get(session, DEPOSIT_CREDIT_BPS_KEY, DEFAULT_DEPOSIT_CREDIT_BPS),
        platform_settings.get(session, FEE_BPS_KEY, DEFAULT_FEE_BPS),
    )


def activate(
    session: Session,
    resource_id: int,
    *,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
    now: datetime | None = None,
) -> ResourceInfo:
    """Make a ``pending`` resource ``active`` after its probe passed; credit its depositor
    (module docstring; :func:`~modelbank.pool.resources.deposit_split` for the arithmetic).
    Idempotent: a resource already activated (active, depleted, suspended) is returned as
    it is. Raises :class:`~modelbank.pool.errors.ResourceNotFound`, :class:`ResourceState`
    (withdrawn or failed), :class:`~modelbank.pool.errors.PoolSettingsInvalid`."""
    now = now or utcnow()
    owner = get_resource(session, resource_id).owner_id
    wallet_id = None if owner is None else users.get_user(session, owner).wallet_account_id
    if wallet_id is not None:  # lock order: the wallet, then the resource (as captures do)
        ledger.lock_accounts(session, [wallet_id])
    info = get_resource(session, resource_id, lock=True)
    if info.status in ("active", "depleted", "suspended"):
        return info
    if info.status != "pending":
        raise ResourceState(
            f"resource {resource_id} is {info.status}: only a pending resource is activated",
            resource_id=resource_id,
            status=info.status,
        )
    credit = fee = 0
    if owner is not None and wallet_id is not None:
        credit_bps, fee_bps = deposit_rates(session)
        credit, fee = deposit_split(info.pool_quota_uusd, credits_per_usd, credit_bps, fee_bps)
        _post_deposit(session, info, owner, wallet_id, credit, fee, now)
    session.connection().execute(
        update(resources)
        .where(resources.c.id == resource_id)
        .values(
            status="active",
            status_reason=None,
            deposit_credit_ucr=credit,
            fee_ucr=fee,
            activated_at=now,
            updated_at=now,
        )
    )
    return get_resource(session, resource_id)


def _post_deposit(
    session: Session,
    info: ResourceInfo,
    owner: int,
    wallet_id: int,
    credit: int,
    fee: int,
    now: datetime,
) -> None:
    ref = ("resource", info.id)
    if credit > 0:
        grants.issue(
            session,
            owner,
            wallet_id,
            credit,
            source=grants.GrantSource.DEPOSIT,
            idempotency_key=deposit_key(info.id),
            ref=ref,
            metadata={"pool_quota_uusd": info.pool_quota_uusd},
            now=now,
        )
    if fee > 0:
        ledger.transfer(
            session,
            ledger.NewTransfer(
                debit_account_id=ledger.platform_account(session, AccountCode.POOL_DEPOSITS),
                credit_account_id=ledger.platform_account(session, AccountCode.PLATFORM_FEES),
                amount=fee,
                code=TransferCode.FEE,
                ref_type=ref[0],
                ref_id=ref[1],
                idempotency_key=f"pool:fee:{info.id}",
            ),
            now=now,
        )
    if credit > 0:
        alerts.check(session, [owner], now=now)


def deposit_key(resource_id: int) -> str:
    """Idempotency key of a resource's deposit credit transfer (its grant's transfer)."""
    return f"pool:deposit:{resource_id}"


def note_probe(
    session: Session, resource_id: int, reason: str, *, now: datetime | None = None
) -> None:
    """Record why a pending resource's probe did not pass yet (it stays ``pending``; a
    retry of the deposit probes again). Other statuses are left alone."""
    session.connection().execute(
        update(resources)
        .where(resources.c.id == resource_id, resources.c.status == "pending")
        .values(status_reason=reason[:MAX_REASON_LENGTH], updated_at=now or utcnow())
    )
