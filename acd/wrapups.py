"""Wrap-up codes: after a call the agent says what it was, from the site's own list.

The codes are `config.yaml`'s `wrapup_codes`; the pick is stored per call (picking again
corrects it) with who picked it. An agent codes the calls they took; a supervisor may
correct anyone's. Which calls an agent took is the ACD's to say (the caller of this
module checks it); here are the rules of the code itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from acd.errors import AcdInvalidInput
from acd.models import CallWrapup
from kokan.config import Settings
from kokan.db import utcnow
from kokan.errors import Conflict

NOTE_MAX_CHARS = 2000
"""A few sentences for the next agent; the ticket holds the long story."""


class WrapupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64)
    note: str = Field(default="", max_length=NOTE_MAX_CHARS)


class NoWrapupCodes(Conflict):
    error_id = "acd-no-wrapup-codes"


def codes_json(settings: Settings) -> dict[str, Any]:
    return {
        "codes": [{"code": code, "label": label} for code, label in settings.wrapup_codes.items()]
    }


def wrapup_json(row: CallWrapup, settings: Settings) -> dict[str, Any]:
    return {
        "call_id": row.call_id,
        "agent_id": row.agent_id,
        "code": row.code,
        "label": settings.wrapup_codes.get(row.code, row.code),
        "note": row.note,
        "by": row.by,
        "updated_at": row.updated_at.isoformat(),
    }


def record(
    session: Session,
    settings: Settings,
    call_id: str,
    agent_id: str,
    request: WrapupRequest,
    by: str,
) -> CallWrapup:
    if not settings.wrapup_codes:
        raise NoWrapupCodes("no wrap-up codes are configured (wrapup_codes in config.yaml)")
    if request.code not in settings.wrapup_codes:
        message = f"not a wrap-up code; use one of {', '.join(settings.wrapup_codes)}"
        raise AcdInvalidInput(f"code: {message}", problems=[{"field": "code", "message": message}])
    row = session.scalar(select(CallWrapup).where(CallWrapup.call_id == call_id))
    if row is None:
        row = CallWrapup(call_id=call_id, agent_id=agent_id, code=request.code, by=by)
        session.add(row)
    row.code, row.note, row.by, row.updated_at = request.code, request.note, by, utcnow()
    session.flush()
    return row


def wrapup_of(session: Session, call_id: str) -> CallWrapup | None:
    return session.scalar(select(CallWrapup).where(CallWrapup.call_id == call_id))
