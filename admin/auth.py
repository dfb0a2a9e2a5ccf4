"""Role checks for every route: a route names the roles it admits, nothing is open by default."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import current_app, g, request, session
from sqlalchemy.orm import Session

from admin.models import Role, User
from admin.services import user_for_token
from admin.sign_in import session_stamp
from kokan.errors import AuthenticationRequired, RoleForbidden
from kokan.wiring import database

P = ParamSpec("P")
R = TypeVar("R")


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass(frozen=True)
class Principal:
    """Who is asking, detached from the session that looked them up."""

    user_id: int
    username: str
    role: Role


SESSION_USER = "uid"
"""The signed-in user's id in the signed session cookie (the web UI)."""
SESSION_STAMP = "stamp"
"""admin.sign_in.session_stamp at sign-in: a password change ends every older session."""


class PasswordChangeRequired(RoleForbidden):
    error_id = "password-change-required"


def has_bearer_token() -> bool:
    """Bearer tokens are not sent by browsers on their own, so they need no CSRF token."""
    return _bearer_token() is not None


def session_user_id() -> int | None:
    """The signed-in user's id if the request carries a web session (read without a query)."""
    if current_app.config["SESSION_COOKIE_NAME"] not in request.cookies:
        return None  # never touch the session of a request without one (webhooks)
    value = session.get(SESSION_USER)
    return value if isinstance(value, int) else None


def session_user(db: Session) -> User | None:
    """The web session's user, if the session is still good: a user since disabled, or one
    whose password changed after this session signed in, ends it (the cookie is cleared)."""
    user_id = session_user_id()
    if user_id is None:
        return None
    user = db.get(User, user_id)
    if user is None or user.disabled or session_stamp(user) != session.get(SESSION_STAMP):
        session.clear()
        return None
    return user


def authenticated_principal() -> Principal:
    """Bearer token first (integrations, scripts); else the web session's signed-in user."""
    token = _bearer_token()
    if token is not None:
        with database().unit_of_work() as db:
            user = user_for_token(db, token)
            if user is None:
                raise AuthenticationRequired("the token is unknown, revoked or its user disabled")
            return Principal(user_id=user.id, username=user.username, role=Role(user.role))
    if session_user_id() is None:
        raise AuthenticationRequired("sign in, or send Authorization: Bearer <token>")
    with database().unit_of_work() as db:
        found = session_user(db)
        if found is None:
            raise AuthenticationRequired("the session has ended; sign in again")
        if found.must_change_password:
            raise PasswordChangeRequired("choose your own password first (/password)")
        return Principal(user_id=found.id, username=found.username, role=Role(found.role))


def require_role(*roles: Role) -> Callable[[Callable[P, R]], Callable[P, R]]:
    allowed = set(roles)

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = authenticated_principal()
            if principal.role not in allowed:
                raise RoleForbidden(
                    f"this needs the role {' or '.join(sorted(r.value for r in allowed))}"
                )
            g.principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorator
