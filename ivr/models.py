"""Published flows: immutable numbered versions and which one new calls use."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKeyConstraint, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kokan.db import Base, UTCDateTime, utcnow


class FlowVersion(Base):
    """The exact YAML a version was published with; never updated after insert."""

    __tablename__ = "flow_versions"
    __table_args__ = (UniqueConstraint("flow", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flow: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_by: Mapped[str] = mapped_column(String(64))


class ActiveFlow(Base):
    """The version new calls of a flow start on; calls in progress keep theirs."""

    __tablename__ = "active_flows"
    __table_args__ = (
        ForeignKeyConstraint(["flow", "version"], ["flow_versions.flow", "flow_versions.version"]),
    )

    flow: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(64))


class FlowActivation(Base):
    """Every publish and rollback, in order: the audit trail and what `rollback` goes back to."""

    __tablename__ = "flow_activations"

    id: Mapped[int] = mapped_column(primary_key=True)
    flow: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    by: Mapped[str] = mapped_column(String(64))
