"""The schema: every table the controller keeps. Alembic migrations in migrations/ create it.

Money and quantities are Decimal (NUMERIC on PostgreSQL, exact text on SQLite); times are
timezone-aware UTC on both backends. JSON documents are stored as canonical JSON text so that
their bytes, and therefore their hashes, survive a round trip unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

GENESIS_HASH = "0" * 64


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExactDecimal(TypeDecorator):
    """Decimal without loss: NUMERIC(38, 18) on PostgreSQL, its exact text on SQLite."""

    impl = Numeric(38, 18)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(String(64) if dialect.name == "sqlite" else Numeric(38, 18))

    def process_bind_param(self, value: Decimal | None, dialect):
        if value is None:
            return None
        return str(Decimal(value)) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value, dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value).normalize() if not isinstance(value, Decimal) else value.normalize()


class Base(DeclarativeBase):
    pass


class ConfigSnapshot(Base):
    """An immutable strategy config, addressed by the SHA-256 of its canonical JSON."""

    __tablename__ = "config_snapshots"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Release(Base):
    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    manifest: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    config_sha256: Mapped[str] = mapped_column(ForeignKey("config_snapshots.sha256"))
    notes: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Rollout(Base):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"), index=True)
    baseline_release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    pipeline: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decision: Mapped[str] = mapped_column(Text, default="{}")
    """The decision's state as canonical JSON: the daemon rebuilds itself from it after a restart."""
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The epoch of the rollout's lease (`RolloutLease`), copied here when a daemon claims it: every write
    its owner makes about the rollout first checks that it is still this one (the fence)."""


class RolloutLease(Base):
    """Which daemon owns a rollout (acts on it) until when; a takeover raises the epoch.

    A rollout's row is written with the rollout, unowned (empty ``owner``, epoch 0). A daemon claims
    it when it is unowned or its lease expired, renews it every third of its length, and another
    daemon takes it over once it expired (several daemons on PostgreSQL; SQLite has one)."""

    __tablename__ = "rollout_leases"

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(128), default="", server_default="")
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Since when ``owner`` holds it (this epoch)."""
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    """None: never claimed."""


class PlacementLease(Base):
    """Which supervisor may run a bot on an instance (one account), until when: the bot's dead man's switch.

    A supervisor (`controller.deploy.supervisor`) raises the epoch when it starts a bot there, renews its
    lease every third of its length, and kills its bot when the epoch moved on (another placement, or a
    stop from any host) or when it could not renew for a lease length. At most one bot trades an account,
    up to one lease length of overlap."""

    __tablename__ = "placement_leases"

    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    owner: Mapped[str] = mapped_column(String(128), default="", server_default="")
    """``HOST:PID`` of the supervisor holding it; empty once released or superseded by a stop."""
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class AccountClaim(Base):
    """An account an active rollout holds (places on or compares with): the primary key makes it at most
    one active rollout per account, on every engine. Written with the rollout, deleted when it ends."""

    __tablename__ = "account_claims"

    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)


class StageRun(Base):
    __tablename__ = "stage_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    capital_cap: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))


class VerdictChange(Base):
    """A policy group's verdict when it changed (not every evaluation), with its evidence."""

    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    stage_run_id: Mapped[int | None] = mapped_column(ForeignKey("stage_runs.id"))
    policy: Mapped[str] = mapped_column(String(128))
    group_key: Mapped[str] = mapped_column(String(256), default="", server_default="")
    """The group judged (``symbol=BTCUSDT``; empty for a policy judged as a whole): a row is
    stored when this group's outcome changes."""
    verdict: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[str | None] = mapped_column(String(128))
    window_seconds: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    evidence: Mapped[str] = mapped_column(Text, default="{}")


class OperatorCommand(Base):
    """A durable operator command (promote, rollback, pause, ...) that the daemon acknowledges."""

    __tablename__ = "operator_commands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    args: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    """The daemon carrying out a command no rollout lease covers (a baseline placement): claimed
    compare-and-set, so that two daemons never both carry it out (`commands.claim_command`)."""
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """After this, a claimer that never answered is taken for dead and another daemon may claim it."""


class RollbackStep(Base):
    """One idempotent step of a persisted rollback plan, recorded before and after it runs."""

    __tablename__ = "rollback_steps"
    __table_args__ = (UniqueConstraint("rollout_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    detail: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str | None] = mapped_column(Text)


class Deployment(Base):
    """A release placed on an account: live until stopped. At most one live row per account.

    The row is written before the placement stops or changes anything (``state`` "starting"),
    with the account's exchange settings as they were; it says "running" once the release started.
    """

    __tablename__ = "deployments"
    __table_args__ = (
        Index("uq_deployments_live_account", "environment", "account", unique=True,
              sqlite_where=text("stopped_at IS NULL"), postgresql_where=text("stopped_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id"), index=True)
    environment: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    instance: Mapped[str] = mapped_column(String(128))
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    config_sha256: Mapped[str] = mapped_column(ForeignKey("config_snapshots.sha256"))
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id"))
    """What ran on the account before (the rollback target), if anything."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), server_default="running")
    """"starting": the intent, written before anything on the account changed; "running": the
    release started. A row left "starting" is a placement that did not finish."""
    settings_before: Mapped[str | None] = mapped_column(Text)
    """Canonical JSON of the account's exchange settings read just before the placement: leverage
    and margin type of every symbol the old or the new config names, position and multi-assets
    modes. What a rollback of this deployment restores; NULL for rows older than the snapshot."""


class Fill(Base):
    """A trade as the exchange reported it; (account, symbol, trade_id) is unique so replays dedupe."""

    __tablename__ = "fills"
    __table_args__ = (UniqueConstraint("account", "symbol", "trade_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    trade_id: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[int] = mapped_column(BigInteger)
    client_order_id: Mapped[str | None] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(8))
    price: Mapped[Decimal] = mapped_column(ExactDecimal)
    qty: Mapped[Decimal] = mapped_column(ExactDecimal)
    quote_qty: Mapped[Decimal] = mapped_column(ExactDecimal)
    commission: Mapped[Decimal] = mapped_column(ExactDecimal)
    commission_asset: Mapped[str] = mapped_column(String(16))
    realized_pnl: Mapped[Decimal] = mapped_column(ExactDecimal)
    maker: Mapped[bool] = mapped_column(Boolean)
    leverage: Mapped[int | None] = mapped_column(Integer)
    traded_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEvent(Base):
    """One link of the audit hash chain. Rows are only ever appended."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(256))
    release: Mapped[str | None] = mapped_column(String(64), index=True)
    symbol: Mapped[str | None] = mapped_column(String(32), index=True)
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The chain's newest link, one row: appends lock it; verify checks the tail against it."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class WebhookDelivery(Base):
    """A rollout event's delivery to one webhook: its attempts and how the last one went.

    The webhook is named by ``scheme://host/path`` only (a URL's query may carry a credential), and
    neither the secret nor the signature is kept: the row says whether an endpoint heard the event."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(64))
    webhook: Mapped[str] = mapped_column(String(512))
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    """``sending`` (attempts under way), ``delivered`` (a 2xx) or ``failed`` (every attempt refused)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    """The HTTP status of the last attempt; None when the endpoint did not answer."""
    last_error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Since when the webhook's deliveries have failed (carried over from its earlier events)."""
