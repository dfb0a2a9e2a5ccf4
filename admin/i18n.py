"""The web UI in Japanese and English (Flask-Babel): the catalogs are compiled from their
.po source when the app starts, so the repository holds no generated binaries.

English is the source language of every message; `admin/translations/ja` translates them.
A signed-in user's choice (the language switch) wins; otherwise the browser's
Accept-Language picks, and English is the fallback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, current_app, request, session
from flask_babel import Babel

LANGUAGES = ("ja", "en")
"""What the UI speaks, in the order offered on the switch."""
DEFAULT_LANGUAGE = "en"
SESSION_LANGUAGE = "lang"
"""The language the user chose with the switch, kept in the signed session cookie."""
SOURCE_DIR = Path(__file__).resolve().parent / "translations"
CATALOG_DOMAIN = "messages"


def compile_catalogs(target: Path, source: Path = SOURCE_DIR) -> Path:
    """Write each .po as the .mo Flask-Babel reads, when missing or older than its source.

    Written to a temporary name and renamed, so web workers starting together never read a
    half-written catalog."""
    for po_path in sorted(source.glob(f"*/LC_MESSAGES/{CATALOG_DOMAIN}.po")):
        language = po_path.parent.parent.name
        mo_path = target / language / "LC_MESSAGES" / f"{CATALOG_DOMAIN}.mo"
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        mo_path.parent.mkdir(parents=True, exist_ok=True)
        with po_path.open("rb") as handle:
            catalog = read_po(handle, locale=language, domain=CATALOG_DOMAIN)
        fd, temporary = tempfile.mkstemp(dir=mo_path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            write_mo(out, catalog)
        os.replace(temporary, mo_path)
    return target


def select_language() -> str:
    signed = current_app.config["SESSION_COOKIE_NAME"] in request.cookies
    chosen = session.get(SESSION_LANGUAGE) if signed else None
    if chosen in LANGUAGES:
        return str(chosen)
    return request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANGUAGE


def init_app(app: Flask, compiled_dir: Path) -> None:
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(compile_catalogs(compiled_dir))
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT_LANGUAGE
    Babel(app, locale_selector=select_language)
    app.context_processor(current_language)


def current_language() -> dict[str, str]:
    """Templates read `current_language` for <html lang> and the switch's pressed button."""
    from flask_babel import get_locale

    locale = get_locale()
    return {"current_language": locale.language if locale is not None else DEFAULT_LANGUAGE}


def N_(message: str) -> str:
    """Marks a message the code passes to gettext later, so extraction finds it."""
    return message


DYNAMIC_MESSAGES = (
    N_("admin"),
    N_("supervisor"),
    N_("agent"),
    N_("the current password is not right"),
    N_("the new password is too short or too long"),
    N_("choose a password other than the current one"),
    N_("a password must not be the username"),
    N_("the two new passwords differ"),
    N_("new"),
    N_("open"),
    N_("pending"),
    N_("solved"),
    N_("low"),
    N_("normal"),
    N_("high"),
    N_("urgent"),
)
"""Role names, admin.sign_in's refusals, ticket statuses and priorities: translated where a
page shows them."""
