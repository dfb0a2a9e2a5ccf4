"""Errors the API reports: a stable error_id a client can branch on, and an HTTP status."""

from __future__ import annotations

from typing import Any


class KokanError(Exception):
    error_id = "kokan-error"
    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error_id": self.error_id, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(KokanError):
    error_id = "invalid-input"
    status = 400


class AuthenticationRequired(KokanError):
    error_id = "authentication-required"
    status = 401


class RoleForbidden(KokanError):
    error_id = "role-forbidden"
    status = 403


class NotFound(KokanError):
    error_id = "not-found"
    status = 404


class Conflict(KokanError):
    error_id = "conflict"
    status = 409
