"""The API's own description, docs/openapi.yaml, served to signed-in clients.

The file is the one in the repository (tests/test_openapi.py validates it and checks it
names every /api route), read once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

from flask import Blueprint, Response

from admin.auth import require_role
from admin.models import Role
from kokan.errors import NotFound

blueprint = Blueprint("openapi_doc", __name__, url_prefix="/api")

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
"""Beside ARCHITECTURE.md in the source tree, where reviewers read and edit it."""
OPENAPI_MIMETYPE = "application/yaml"
"""RFC 9512's media type for YAML."""


class OpenApiMissing(NotFound):
    """An install without the source tree's docs/ (Kokan is installed editable by ./run)."""

    error_id = "openapi-not-installed"


@functools.cache
def _document() -> bytes:
    try:
        return OPENAPI_PATH.read_bytes()
    except FileNotFoundError:
        raise OpenApiMissing(f"{OPENAPI_PATH} is not part of this installation") from None


@blueprint.get("/openapi.yaml")
@require_role(Role.ADMIN, Role.SUPERVISOR, Role.AGENT)
def openapi_yaml() -> Response:
    return Response(_document(), mimetype=OPENAPI_MIMETYPE)
