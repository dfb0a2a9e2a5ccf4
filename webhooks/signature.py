"""Every Twilio endpoint checks X-Twilio-Signature: a request Twilio did not sign is a 403."""

from __future__ import annotations

import functools
import hmac
import io
import logging
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import parse_qsl

import werkzeug.urls  # registers URL_QUOTE_ERRORS
import werkzeug.wrappers
from flask import Request
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from kokan.errors import KokanError
from kokan.wiring import current_request, settings
from webhooks.schemas import MalformedWebhook

FORM_URLENCODED = "application/x-www-form-urlencoded"
URL_QUOTE_ERRORS = "werkzeug.url_quote"
"""werkzeug's codec error handler (registered when werkzeug.urls is imported): a %-escape
that is not UTF-8 stays as the escape."""


def environ_key(header: str) -> str:
    """A request header's key in the WSGI environ (PEP 3333)."""
    return "HTTP_" + header.upper().replace("-", "_")


SIGNATURE_ENVIRON_KEY = environ_key(SIGNATURE_HEADER)
SIGNATURE_SETTINGS_ENVIRON_KEY = environ_key(SIGNATURE_SETTINGS_HEADER)
"""The signature headers read straight from the environ: werkzeug's header view rebuilds
each name on every lookup."""

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)


class SignatureInvalid(KokanError):
    error_id = "twilio-signature-invalid"
    status = 403


class ForeignAccount(KokanError):
    error_id = "twilio-account-foreign"
    status = 403


class TwilioParams(ImmutableMultiDict[str, str]):
    """Form and query parameters that answer twilio's RequestValidator at once: it asks a
    form for `getall` (aiohttp's name) before `getlist`, so a plain werkzeug form costs it
    a raised and caught AttributeError per parameter on every webhook."""

    getall = cast("Callable[[TwilioParams, str], list[str]]", dict.__getitem__)
    """A name's values: werkzeug keeps them as the dict's value, a list, which the validator
    only reads (it asks only for names the form has; a copy through getlist costs two
    Python calls per parameter)."""


class KokanRequest(Request):
    parameter_storage_class = TwilioParams

    def _load_form_data(self) -> None:
        """A urlencoded body of known length (every Twilio webhook) is read in one call and
        parsed by the standard library, as werkzeug's parser does, without the parser,
        limited stream and header objects werkzeug builds around it (on the voice webhook
        those cost more than the parse). Anything else takes werkzeug's own path, without
        Flask's wrapper, which only swaps in a friendlier error for files in debug mode."""
        if "form" in self.__dict__:
            return
        environ = self.environ
        length = environ.get("CONTENT_LENGTH", "")
        if environ.get("CONTENT_TYPE") != FORM_URLENCODED or not length.isdigit():
            werkzeug.wrappers.Request._load_form_data(self)
            return
        size = int(length)
        limit = self.max_content_length
        if limit is not None and size > limit:
            raise RequestEntityTooLarge()
        body = environ["wsgi.input"].read(size)
        if len(body) != size:
            raise ClientDisconnected()
        try:
            # as werkzeug's own parser: UTF-8, a bad %-escape kept as it came
            items = parse_qsl(body.decode(), keep_blank_values=True, errors=URL_QUOTE_ERRORS)
        except ValueError:  # not UTF-8: an empty form, as werkzeug gives
            items = []
        d = self.__dict__
        d["stream"], d["form"], d["files"] = io.BytesIO(), TwilioParams(items), TwilioParams()


def request_class(config: Mapping[str, Any]) -> type[KokanRequest]:
    """KokanRequest with the app's body limits fixed when the app is made. Flask's request
    reads MAX_CONTENT_LENGTH, MAX_FORM_MEMORY_SIZE and MAX_FORM_PARTS from current_app's
    config each time a form is parsed (eleven context-local lookups per webhook) unless the
    request carries its own; these are its own, from the same config."""
    return type(
        "KokanRequest",
        (KokanRequest,),
        {
            "_max_content_length": config.get("MAX_CONTENT_LENGTH"),
            "_max_form_memory_size": config.get("MAX_FORM_MEMORY_SIZE"),
            "_max_form_parts": config.get("MAX_FORM_PARTS"),
        },
    )


def signed_url(current: Request, public: str | None) -> str:
    """The URL Twilio requested: the configured public URL wins over what the proxy says."""
    if public:
        return public + (current.full_path if current.query_string else current.path)
    return current.url


def check_signature(current: Request) -> None:
    """403 unless `current` carries Twilio's signature of itself made with our auth token
    (and, when an account is configured, is for that account)."""
    config = settings()
    token = config.twilio.auth_token
    if token is None or not token.get_secret_value():
        log.error("TWILIO_AUTH_TOKEN is not set: refusing every Twilio webhook")
        raise SignatureInvalid("Kokan has no Twilio auth token configured")
    environ = current.environ
    signature = environ.get(SIGNATURE_ENVIRON_KEY, "")
    if not signature:
        raise SignatureInvalid(f"missing {SIGNATURE_HEADER}")
    algorithm = get_signature_algorithm(environ.get(SIGNATURE_SETTINGS_ENVIRON_KEY))
    validator = RequestValidator(token.get_secret_value())
    url = signed_url(current, config.public_url)
    form = current.form
    # the URL exactly as Twilio asked for it matches almost always: one HMAC; otherwise let
    # the library try its variants (with and without the default port)
    exact = validator.compute_signature(url, form, algorithm)
    if not hmac.compare_digest(exact.encode(), signature.encode()) and not validator.validate(
        url, form, signature, algorithm
    ):
        log.warning("Twilio signature mismatch for %s", url)
        raise SignatureInvalid("the X-Twilio-Signature does not match this request")
    expected_account = config.twilio.account_sid
    if expected_account:
        account = form.get("AccountSid", "")
        if not account:
            # signed by Twilio but without the account: malformed, not another account's
            raise MalformedWebhook("AccountSid is missing")
        if account != expected_account:
            raise ForeignAccount("the request is for another Twilio account")


def twilio_signed(view: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        check_signature(current_request())
        return view(*args, **kwargs)

    return wrapper
