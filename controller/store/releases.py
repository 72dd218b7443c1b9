"""Releases and their immutable config snapshots.

A release version names one manifest, one artifact digest and one config snapshot forever:
recording the same version again with identical content changes nothing, with different
content it is refused. Snapshots are content-addressed (SHA-256 of canonical JSON) and
re-hashed whenever they are read, so an edited row is noticed rather than used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controller.canonical import canonical_json, sha256_hex
from controller.clock import Clock
from controller.errors import ConflictError, InputError, NotFoundError, StoreError
from controller.store import audit
from controller.store.database import Database
from controller.store.models import ConfigSnapshot, Release
from controller.store.release_record import ReleaseInfo, Snapshot, is_prefix, not_found


@dataclass(frozen=True)
class NewRelease:
    """A release as the operator described it, validated, before it is recorded."""

    version: str
    manifest: dict[str, Any]
    artifact_sha256: str
    config: dict[str, Any]
    notes: str | None = None

    @property
    def manifest_text(self) -> str:
        return canonical_json(self.manifest)

    @property
    def config_text(self) -> str:
        return canonical_json(self.config)


@dataclass(frozen=True)
class Recorded:
    release: ReleaseInfo
    created: bool  # False: the same content was already recorded under this version


async def add_release(db: Database, clock: Clock, new: NewRelease, *, actor: str) -> Recorded:
    """Record ``new`` and snapshot its config, both audited, in one transaction."""
    try:
        return await _add_release(db, clock, new, actor=actor)
    except IntegrityError:
        # Another writer recorded the same version or snapshot between our check and insert
        # (PostgreSQL; SQLite's write lock prevents it). Its row is there now: judge against it.
        return await _add_release(db, clock, new, actor=actor)


async def _add_release(db: Database, clock: Clock, new: NewRelease, *, actor: str) -> Recorded:
    manifest_sha = sha256_hex(new.manifest_text)
    config_sha = sha256_hex(new.config_text)
    async with db.write() as session:
        existing = (await session.execute(select(Release).where(Release.version == new.version))).scalar_one_or_none()
        if existing is not None:
            differs = [name for name, ours, theirs in (
                ("manifest", manifest_sha, existing.manifest_sha256),
                ("artifact", new.artifact_sha256, existing.artifact_sha256),
                ("config", config_sha, existing.config_sha256)) if ours != theirs]
            if differs:
                raise ConflictError(
                    f"release {new.version} is already recorded with a different {' and '.join(differs)}; "
                    "a release version is immutable: record the change under a new version")
            return Recorded(ReleaseInfo.from_row(existing), created=False)

        now = clock.now()
        snapshot = await session.get(ConfigSnapshot, config_sha)
        if snapshot is None:
            session.add(ConfigSnapshot(sha256=config_sha, content=new.config_text, created_at=now))
            await audit.append(session, clock, actor=actor, kind="config.snapshot", subject=f"config:{config_sha[:12]}",
                               release=new.version, payload={"sha256": config_sha, "config": new.config})
        elif snapshot.content != new.config_text:
            raise StoreError(f"config snapshot {config_sha} in the database does not match its hash: the row was edited")
        row = Release(version=new.version, manifest=new.manifest_text, manifest_sha256=manifest_sha,
                      artifact_sha256=new.artifact_sha256, config_sha256=config_sha, notes=new.notes,
                      created_by=actor, created_at=now)
        session.add(row)
        await session.flush()
        await audit.append(session, clock, actor=actor, kind="release.added", subject=f"release:{new.version}",
                           release=new.version,
                           payload={"version": new.version, "manifest_sha256": manifest_sha,
                                    "artifact_sha256": new.artifact_sha256, "config_sha256": config_sha,
                                    "notes": new.notes, "command": new.manifest.get("command")})
        return Recorded(ReleaseInfo.from_row(row), created=True)


async def record_snapshot(db: Database, clock: Clock, config: dict[str, Any], *, release: str, actor: str,
                          derived: dict[str, Any]) -> str:
    """Store a config derived from a release's own snapshot (a stage's toggle turned on) and return its
    SHA-256; ``derived`` says how it was derived, in the audit event. Content-addressed: storing the
    same config again writes nothing."""
    text = canonical_json(config)
    sha = sha256_hex(text)
    async with db.write() as session:
        snapshot = await session.get(ConfigSnapshot, sha)
        if snapshot is None:
            session.add(ConfigSnapshot(sha256=sha, content=text, created_at=clock.now()))
            await audit.append(session, clock, actor=actor, kind="config.snapshot", subject=f"config:{sha[:12]}",
                               release=release, payload={"sha256": sha, "config": config, "derived": derived})
        elif snapshot.content != text:
            raise StoreError(f"config snapshot {sha} in the database does not match its hash: the row was edited")
    return sha


async def get_release(db: Database, version: str) -> ReleaseInfo:
    async with db.read() as session:
        row = (await session.execute(select(Release).where(Release.version == version))).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"no release {version!r}; `canaryctl release list` shows the recorded ones")
        return ReleaseInfo.from_row(row)


async def get_snapshot(db: Database, ref: str) -> Snapshot:
    """A snapshot by full SHA-256, by a unique prefix of at least 6 hex digits, or by release version."""
    async with db.read() as session:
        row = await session.get(ConfigSnapshot, ref)
        if row is None:
            release = (await session.execute(select(Release).where(Release.version == ref))).scalar_one_or_none()
            if release is not None:
                row = await session.get(ConfigSnapshot, release.config_sha256)
        if row is None and is_prefix(ref):
            rows = (await session.execute(
                select(ConfigSnapshot).where(ConfigSnapshot.sha256.startswith(ref)).limit(2))).scalars().all()
            if len(rows) > 1:
                raise InputError(f"snapshot prefix {ref!r} is ambiguous; give more digits")
            row = rows[0] if rows else None
        if row is None:
            raise NotFoundError(not_found(ref))
        return Snapshot.from_row(row)
