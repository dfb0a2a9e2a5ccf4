"""Errors the API reports: a stable error_id a client can branch on, and an HTTP status."""

from __future__ import annotations

from typing import Any, Self

from pydantic import ValidationError


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

    @classmethod
    def from_validation(cls, exc: ValidationError) -> Self:
        """The first problem, named by its field, leads the message; all are in `problems`."""
        problems = [
            {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
            for error in exc.errors()
        ]
        first = problems[0]
        where = f"{first['field']}: " if first["field"] else ""
        return cls(f"{where}{first['message']}", problems=problems)


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
