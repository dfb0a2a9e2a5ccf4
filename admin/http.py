"""Thin JSON views for the signed-in user."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from admin.auth import require_role
from admin.models import Role

blueprint = Blueprint("admin_api", __name__, url_prefix="/api")


@blueprint.get("/me")
@require_role(Role.ADMIN, Role.SUPERVISOR, Role.AGENT)
def me() -> dict[str, Any]:
    principal = g.principal
    return {"username": principal.username, "role": principal.role.value}
