"""Publish and roll back flows; serve published versions to the engine."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.loader import FlowInvalid, parse_flow
from ivr.model import Flow
from ivr.models import ActiveFlow, FlowActivation, FlowVersion
from ivr.validator import CheckContext, check
from kokan.db import Database
from kokan.errors import Conflict, NotFound
from tickets.services import audit

AUDIT_SUBJECT = "flow"
"""AuditEntry.subject_type of flow changes: subject_id is the version, the flow's name is in
detail["flow"]."""

ACTIVE_VERSION_REFRESH_S = 1.0
"""How long a web process trusts the active version it read: a publish or rollback reaches new
calls within this, without a database query per call."""


class FlowUnchanged(Conflict):
    error_id = "flow-unchanged"


class FlowNotPublished(NotFound):
    error_id = "flow-not-published"


class FlowVersionNotFound(NotFound):
    error_id = "flow-version-not-found"


class NothingToRollBackTo(Conflict):
    error_id = "nothing-to-roll-back-to"


@dataclass(frozen=True)
class Published:
    flow: str
    version: int
    sha256: str


def _sha(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def validate_source(name: str, source: str, display: str, context: CheckContext) -> Flow:
    parsed = parse_flow(source, display, name=name)
    problems = check(parsed, context)
    if problems:
        raise FlowInvalid(problems)
    return parsed.flow


def active_version(session: Session, name: str) -> int | None:
    row = session.get(ActiveFlow, name)
    return row.version if row else None


def publish(
    session: Session,
    name: str,
    source: str,
    display: str,
    context: CheckContext,
    by: str,
    note: str | None = None,
    tests_skipped: bool = False,
) -> Published:
    """Check the flow in full, then store it as the next version and make it active, with an
    audit entry: whoever publishes (the editor, `kokan flows publish`, a first start) is
    in the log with when."""
    validate_source(name, source, display, context)
    sha = _sha(source)
    latest = session.scalar(
        select(FlowVersion).where(FlowVersion.flow == name).order_by(FlowVersion.version.desc())
    )
    active = session.get(ActiveFlow, name)
    if latest is not None and latest.sha256 == sha and active and active.version == latest.version:
        raise FlowUnchanged(f"flow {name!r} is unchanged since version {latest.version}")
    version = (latest.version if latest else 0) + 1
    session.add(FlowVersion(flow=name, version=version, source=source, sha256=sha, published_by=by))
    session.flush()
    _activate(session, name, version, "publish", by)
    detail = {"flow": name, "version": version, "note": note, "tests_skipped": tests_skipped}
    audit(session, by, "flow.published", AUDIT_SUBJECT, version, detail)
    return Published(name, version, sha)


def rollback(session: Session, name: str, by: str, to_version: int | None = None) -> int:
    """Make an earlier version active: the one given, or the one active before the current."""
    active = session.get(ActiveFlow, name)
    if active is None:
        raise FlowNotPublished(f"flow {name!r} has never been published")
    active_before = active.version
    if to_version is None:
        history = session.scalars(
            select(FlowActivation.version)
            .where(FlowActivation.flow == name)
            .order_by(FlowActivation.id.desc())
        ).all()
        earlier = [version for version in history if version != active.version]
        if not earlier:
            raise NothingToRollBackTo(f"flow {name!r} has no earlier version to return to")
        to_version = earlier[0]
    exists = session.scalar(
        select(FlowVersion.id).where(FlowVersion.flow == name, FlowVersion.version == to_version)
    )
    if exists is None:
        raise FlowVersionNotFound(f"flow {name!r} has no version {to_version}")
    if to_version == active.version:
        raise FlowUnchanged(f"flow {name!r} is already on version {to_version}")
    _activate(session, name, to_version, "rollback", by)
    detail = {"flow": name, "version": to_version, "from": active_before, "to": to_version}
    audit(session, by, "flow.rolled_back", AUDIT_SUBJECT, to_version, detail)
    return to_version


def _activate(session: Session, name: str, version: int, action: str, by: str) -> None:
    active = session.get(ActiveFlow, name)
    if active is None:
        session.add(ActiveFlow(flow=name, version=version, changed_by=by))
    else:
        active.version, active.changed_by = version, by
    session.add(FlowActivation(flow=name, version=version, action=action, by=by))
    session.flush()


def versions(session: Session, name: str) -> list[FlowVersion]:
    return list(
        session.scalars(
            select(FlowVersion).where(FlowVersion.flow == name).order_by(FlowVersion.version)
        )
    )


def published_names(session: Session) -> list[str]:
    return list(session.scalars(select(ActiveFlow.flow).order_by(ActiveFlow.flow)))


def count_published(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ActiveFlow)) or 0)


class PublishedFlows:
    """The engine's FlowSource on a server: active version from the database on each new call,
    parsed versions cached for the life of the process (they never change)."""

    def __init__(
        self,
        database: Database,
        refresh_s: float = ACTIVE_VERSION_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.refresh_s = refresh_s
        self.clock = clock
        self._parsed: dict[tuple[str, int], Flow] = {}
        self._active: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def active(self, name: str) -> tuple[int, Flow]:
        now = self.clock()
        known = self._active.get(name)
        if known is not None and now - known[0] < self.refresh_s:
            return known[1], self.version(name, known[1])
        with self.database.sessions() as session:
            version = active_version(session, name)
        if version is None:
            raise FlowNotPublished(f"flow {name!r} has never been published")
        self._active[name] = (now, version)
        return version, self.version(name, version)

    def version(self, name: str, version: int) -> Flow:
        key = (name, version)
        cached = self._parsed.get(key)
        if cached is not None:
            return cached
        with self.database.sessions() as session:
            row = session.scalar(
                select(FlowVersion).where(FlowVersion.flow == name, FlowVersion.version == version)
            )
            if row is None:
                raise FlowVersionNotFound(f"flow {name!r} has no version {version}")
            source = row.source
        flow = parse_flow(source, f"{name}@v{version}", name=name).flow
        with self._lock:
            self._parsed[key] = flow
        return flow
