"""The app's request class reads urlencoded webhooks itself; it must read them as werkzeug
would, refuse what werkzeug refuses, and leave every other body to werkzeug."""

from __future__ import annotations

import io
from typing import Any

import pytest
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request as WerkzeugRequest

from webhooks.signature import FORM_URLENCODED, KokanRequest, TwilioParams, request_class

LIMIT = 64 * 1024
LimitedRequest = request_class({"MAX_CONTENT_LENGTH": LIMIT})


def environ(
    body: bytes, content_type: str | None = FORM_URLENCODED, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    built = EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ()
    built.update(extra or {})
    return built


UGLY_BODIES = [
    b"",
    b"CallSid=CA1&From=%2B81312345678&To=%2B815012345678",
    b"Digits=1%232&Digits=9&empty=&flag",  # repeated name, blank value, no "="
    b"SpeechResult=%E6%97%A5%E6%9C%AC%E8%AA%9E+please",  # UTF-8 escapes, "+" for a space
    b"bad=%ZZ&half=%E6%97&raw=%ff",  # not escapes, cut UTF-8, not UTF-8: kept as they came
    "直=日本語".encode(),  # raw UTF-8 in the body
    b"\xff\xfe=binary",  # a body that is not UTF-8 at all
    b"&&a=1&&b=2&",
    b"a=1;b=2",  # ";" is not a separator
    b"Digits=" + b"7" * 10_000,
]


@pytest.mark.parametrize("body", UGLY_BODIES)
def test_a_urlencoded_body_reads_as_werkzeug_reads_it(body: bytes) -> None:
    ours = LimitedRequest(environ(body))
    theirs = WerkzeugRequest(environ(body))
    assert list(ours.form.items(multi=True)) == list(theirs.form.items(multi=True))
    assert not ours.files
    assert ours.get_data() == b""  # the body was read once, as werkzeug leaves it


@pytest.mark.parametrize(
    "content_type",
    [f"{FORM_URLENCODED}; charset=UTF-8", "multipart/form-data", "application/json", None],
)
def test_other_bodies_take_werkzeugs_path(content_type: str | None) -> None:
    if content_type == "multipart/form-data":
        fields = {"CallSid": "CA1", "Body": "日本語"}
        built = EnvironBuilder(method="POST", data=fields, content_type=content_type).get_environ()
    else:
        built = environ(b"CallSid=CA1&Body=%E6%97%A5%E6%9C%AC%E8%AA%9E", content_type)
    ours = LimitedRequest(built)
    assert isinstance(ours, KokanRequest)
    if content_type is not None and content_type.startswith(FORM_URLENCODED):
        assert ours.form["Body"] == "日本語"
    elif content_type == "multipart/form-data":
        assert ours.form.to_dict() == {"CallSid": "CA1", "Body": "日本語"}
    else:
        assert not ours.form


def test_a_body_without_a_length_takes_werkzeugs_path() -> None:
    body = b"CallSid=CA1&Digits=5"
    built = environ(body, extra={"wsgi.input_terminated": True})
    del built["CONTENT_LENGTH"]  # a chunked request: the server ends the stream
    assert LimitedRequest(built).form.to_dict() == {"CallSid": "CA1", "Digits": "5"}


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    stream = io.BytesIO(b"x=" + b"1" * LIMIT)
    built = environ(b"", extra={"wsgi.input": stream, "CONTENT_LENGTH": str(LIMIT + 2)})
    with pytest.raises(RequestEntityTooLarge):
        _ = LimitedRequest(built).form
    assert stream.tell() == 0


def test_a_body_shorter_than_declared_is_a_client_gone() -> None:
    built = environ(b"CallSid=CA1", extra={"CONTENT_LENGTH": "500"})
    with pytest.raises(ClientDisconnected):
        _ = LimitedRequest(built).form


def test_the_signature_reads_the_values_werkzeug_keeps() -> None:
    form = LimitedRequest(environ(b"Digits=1&Digits=2&To=%2B81")).form
    assert isinstance(form, TwilioParams)
    assert form.getall("Digits") == ["1", "2"]
    assert form.getall("To") == ["+81"]
