"""Signing in to the web UI: argon2 password checks, a lock-out after repeated failures,
first-time password changes, and the stamp that ends old sessions when a password changes.

The lock-out counts failures per username in Redis: five wrong passwords in a row lock that
name for fifteen minutes, whoever tries it and from wherever, so a guesser cannot spread the
attempts over many addresses. The price is that anyone can lock a name for a while; the
page says so plainly and the admin's CLI still works.
"""

from __future__ import annotations

import hashlib

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from admin.models import User
from admin.services import USERNAME_PATTERN, password_hasher, verify_password
from kokan.errors import AuthenticationRequired, InvalidInput, KokanError

LOCKOUT_FAILURES = 5
"""Wrong passwords in a row before the name is locked: room for typos, none for guessing."""
LOCKOUT_S = 15 * 60
"""How long a locked name stays locked, and how long a failure is remembered."""
FAILURES_KEY = "kokan:sign-in:failures:{username}"
"""Failed sign-ins per lower-cased username; expires LOCKOUT_S after the last failure."""
MIN_PASSWORD_CHARS = 12
"""NIST SP 800-63B asks for at least 8; a shared contact-center floor deserves more."""
MAX_PASSWORD_CHARS = 1024
"""argon2 takes any length, but a megabyte of "password" is an attack, not a password."""
_DUMMY_HASH = password_hasher.hash("no such user: spend the same time as a real check")


class SignInFailed(AuthenticationRequired):
    error_id = "sign-in-failed"


class SignInLocked(KokanError):
    error_id = "sign-in-locked"
    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PasswordRejected(InvalidInput):
    error_id = "password-rejected"


def failures_key(username: str) -> str:
    return FAILURES_KEY.format(username=username.strip().lower())


def session_stamp(user: User) -> str:
    """Changes whenever the password does, so every older session of the user ends."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def _locked_for(client: redis.Redis, key: str) -> int:
    failures = int(client.get(key) or 0)
    if failures < LOCKOUT_FAILURES:
        return 0
    return max(1, int(client.ttl(key)))


def sign_in(session: Session, client: redis.Redis, username: str, password: str) -> User:
    """The user these credentials belong to; raises SignInFailed or SignInLocked."""
    key = failures_key(username)
    locked = _locked_for(client, key)
    if locked:
        raise SignInLocked(
            f"too many failed sign-ins for this name; try again in {locked // 60 + 1} minutes",
            locked,
        )
    user = None
    name = username.strip()
    # a name no user can have (a NUL byte, 10 000 characters) is never looked up: it is
    # simply wrong, and PostgreSQL would refuse the NUL outright
    if 0 < len(password) <= MAX_PASSWORD_CHARS and USERNAME_PATTERN.fullmatch(name):
        user = session.scalar(select(User).where(func.lower(User.username) == name.lower()))
    if user is None:
        verify_password(User(password_hash=_DUMMY_HASH), password[:MAX_PASSWORD_CHARS])
    if user is None or user.disabled or not verify_password(user, password):
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, LOCKOUT_S)
        pipe.execute()
        raise SignInFailed("wrong username or password")
    client.delete(key)
    return user


def change_password(session: Session, user: User, current: str, new: str) -> None:
    if not verify_password(user, current[:MAX_PASSWORD_CHARS]):
        raise PasswordRejected("the current password is not right")
    if not MIN_PASSWORD_CHARS <= len(new) <= MAX_PASSWORD_CHARS:
        raise PasswordRejected("the new password is too short or too long")
    if new == current:
        raise PasswordRejected("choose a password other than the current one")
    if new.strip().lower() == user.username.lower():
        raise PasswordRejected("a password must not be the username")
    user.password_hash = password_hasher.hash(new)
    user.must_change_password = False
    session.flush()
