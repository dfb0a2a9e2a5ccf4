"""One log line per event, carrying the request or call id, with secrets scrubbed."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterable

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
call_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="-")

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s request=%(request_id)s call=%(call_id)s %(message)s"
)
REDACTED = "[redacted]"


class ContextFilter(logging.Filter):
    """Stamps each record with the ids of the request and call it belongs to."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.call_id = call_id_var.get()
        return True


class SecretFilter(logging.Filter):
    """Last line of defence: a configured secret that slips into a message is replaced."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [secret for secret in secrets if len(secret) >= 4]

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        # the formatter then takes the message as it stands instead of formatting it again
        record.msg, record.args = self.scrub(record.getMessage()), None
        # a traceback repeats the exception's message, which may carry the secret too;
        # formatters reuse a record's exc_text once it is set
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACK_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


_TRACEBACK_FORMATTER = logging.Formatter()


class Formatter(logging.Formatter):
    """logging.Formatter whose timestamp text is built once per second, not once per line
    (localtime and strftime on every request's log line); the text is the same."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        whole = int(record.created)
        second, text = self._second
        if second != whole:
            text = time.strftime(self.default_time_format, self.converter(whole))
            self._second = (whole, text)
        milliseconds = self.default_msec_format
        return milliseconds % (text, record.msecs) if milliseconds else text


def configure(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    # LOG_FORMAT uses no thread, process or source-line fields: stop collecting them for
    # every record (the "Optimization" knobs of Python's logging HOWTO; the process id is
    # a system call per record, the source line a walk up the stack)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(LOG_FORMAT))
    handler.addFilter(ContextFilter())
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
