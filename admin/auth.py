"""Role checks for every route: a route names the roles it admits, nothing is open by default."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import g, request

from admin.models import Role
from admin.services import user_for_token
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


def authenticated_principal() -> Principal:
    token = _bearer_token()
    if token is None:
        raise AuthenticationRequired("send Authorization: Bearer <token>")
    with database().unit_of_work() as session:
        user = user_for_token(session, token)
        if user is None:
            raise AuthenticationRequired("the token is unknown, revoked or its user disabled")
        return Principal(user_id=user.id, username=user.username, role=Role(user.role))


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
