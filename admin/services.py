"""Rules for users and API tokens: creation, password checks, bearer-token look-up."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from admin.models import ApiToken, Role, User
from kokan.db import utcnow
from kokan.errors import Conflict, InvalidInput

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
"""Usernames appear in URLs, logs and SIP headers later; keep them to safe ASCII."""

ONE_TIME_PASSWORD_BYTES = 12
"""16 URL-safe characters: strong enough to hand out once, short enough to type."""

TOKEN_PREFIX = "kok_"  # noqa: S105 - a label, not a secret
"""Makes a leaked Kokan token recognisable to secret scanners and to people."""

TOKEN_BYTES = 32

password_hasher = PasswordHasher()


class UserExists(Conflict):
    error_id = "user-exists"


class InvalidUsername(InvalidInput):
    error_id = "invalid-username"


class InvalidRole(InvalidInput):
    error_id = "invalid-role"


@dataclass(frozen=True)
class NewUser:
    user: User
    password: str


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so a fast hash is enough (unlike passwords)."""
    return hashlib.sha256(token.encode()).hexdigest()


def validate_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise InvalidRole(f"unknown role {role!r}; choose one of {choices}") from None


def create_user(session: Session, username: str, role: str) -> NewUser:
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidUsername(
            "a username is 1-64 characters of letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    checked_role = validate_role(role)
    existing = session.scalar(select(User).where(func.lower(User.username) == username.lower()))
    if existing is not None:
        raise UserExists(f"a user named {existing.username!r} already exists")
    password = secrets.token_urlsafe(ONE_TIME_PASSWORD_BYTES)
    user = User(
        username=username,
        role=checked_role.value,
        password_hash=password_hasher.hash(password),
        must_change_password=True,
    )
    session.add(user)
    session.flush()
    return NewUser(user=user, password=password)


def verify_password(user: User, password: str) -> bool:
    try:
        return password_hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_token(session: Session, user: User) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    session.add(ApiToken(user=user, token_hash=hash_token(token), prefix=token[:12]))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked.is_(False)
        )
    )
    if row is None or row.user.disabled:
        return None
    row.last_used_at = utcnow()
    return row.user


def count_users(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))
