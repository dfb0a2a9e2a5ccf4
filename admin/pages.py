"""The web UI's pages: sign in and out, the first-time password, each role's home.

Server-rendered; every page names the roles it admits (`page_for`), like the API's
`require_role`. Someone not signed in is sent to the sign-in page and brought back; a
signed-in user without the role gets a 403 page, never the page.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    g,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from acd import browser_phone
from acd.agent_users import NoAgentForUser
from acd.errors import UnknownAgent
from acd.runtime import acd_service, agent_users
from acd.strategies import Strategy
from admin import kpis
from admin.auth import SESSION_STAMP, SESSION_USER, Principal, session_user
from admin.i18n import LANGUAGES, SESSION_LANGUAGE
from admin.models import Role, User
from admin.sign_in import (
    MIN_PASSWORD_CHARS,
    PasswordRejected,
    SignInFailed,
    SignInLocked,
    change_password,
    session_stamp,
    sign_in,
)
from kokan.wiring import database, redis_client, settings

blueprint = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/ui",
)

P = ParamSpec("P")
PageView = Callable[P, Response | str | tuple[str, int]]

HOME_BY_ROLE = {
    Role.ADMIN: "pages.admin_home",
    Role.SUPERVISOR: "pages.floor",
    Role.AGENT: "pages.desk",
}
"""Where each role lands after signing in."""
VOICE_SDK = (
    Path(__file__).parent / "frontend" / "node_modules" / "@twilio" / "voice-sdk" / "dist"
) / "twilio.min.js"
"""Installed from admin/frontend/package-lock.json; absent: no browser phone on the desk."""
VENDOR_MAX_AGE_S = 3600
"""Browsers may keep the library an hour; a new lock file reaches them within that."""
MAX_FIELD_CHARS = 1024
"""Form fields are names and passwords; anything longer is cut before it reaches a check."""


def _signed_in_user() -> User | None:
    with database().unit_of_work() as db:
        user = session_user(db)
        if user is not None:
            db.expunge(user)
        return user


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site: `next=https://evil.example` must not bounce a user away."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def page_for(*roles: Role) -> Callable[[PageView[P]], PageView[P]]:
    allowed = set(roles)

    def decorator(view: PageView[P]) -> PageView[P]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response | str | tuple[str, int]:
            user = _signed_in_user()
            if user is None:
                return redirect(url_for("pages.sign_in_page", next=request.full_path.rstrip("?")))
            if user.must_change_password:
                return redirect(url_for("pages.password_page"))
            role = Role(user.role)
            g.principal = Principal(user_id=user.id, username=user.username, role=role)
            if role not in allowed:
                message = _("This page is not for your role.")
                return render_template("error.html", status=403, message=message), 403
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _field(name: str) -> str:
    return request.form.get(name, "")[:MAX_FIELD_CHARS]


@blueprint.get("/login")
def sign_in_page() -> str:
    return render_template("login.html", next=_safe_next(request.args.get("next")))


@blueprint.post("/login")
def sign_in_submit() -> Response | tuple[str, int]:
    username, password = _field("username"), _field("password")
    target = _safe_next(request.form.get("next"))
    try:
        with database().unit_of_work() as db:
            user = sign_in(db, redis_client(), username, password)
            _fresh_session()  # nothing from before signing in rides along (session fixation)
            session[SESSION_USER] = user.id
            session[SESSION_STAMP] = session_stamp(user)
            session.permanent = True
            must_change = user.must_change_password
            home = url_for(HOME_BY_ROLE[Role(user.role)])
    except SignInLocked as exc:
        message = _(
            "Too many failed sign-ins for this name. Try again in %(minutes)s minutes.",
            minutes=exc.retry_after_s // 60 + 1,
        )
        return render_template("login.html", error=message, username=username, next=target), 429
    except SignInFailed:
        message = _("Wrong username or password.")
        return render_template("login.html", error=message, username=username, next=target), 401
    if must_change:
        return redirect(url_for("pages.password_page"))
    return redirect(target or home)


def _fresh_session() -> None:
    """Empty the session but for the language the user chose."""
    language = session.get(SESSION_LANGUAGE)
    session.clear()
    if language in LANGUAGES:
        session[SESSION_LANGUAGE] = language


@blueprint.post("/logout")
def sign_out() -> Response:
    _fresh_session()
    return redirect(url_for("pages.sign_in_page"))


@blueprint.get("/password")
def password_page() -> Response | str:
    user = _signed_in_user()
    if user is None:
        return redirect(url_for("pages.sign_in_page"))
    return render_template("password.html", user=user, min_chars=MIN_PASSWORD_CHARS)


@blueprint.post("/password")
def password_submit() -> Response | tuple[str, int]:
    user = _signed_in_user()
    if user is None:
        return redirect(url_for("pages.sign_in_page"))
    new, repeated = _field("new_password"), _field("repeat_password")
    try:
        if new != repeated:
            raise PasswordRejected("the two new passwords differ")
        with database().unit_of_work() as db:
            stored = db.get(User, user.id)
            assert stored is not None
            change_password(db, stored, _field("current_password"), new)
            session[SESSION_STAMP] = session_stamp(stored)  # this session stays signed in
            home = url_for(HOME_BY_ROLE[Role(stored.role)])
    except PasswordRejected as exc:
        page = render_template(
            "password.html", user=user, min_chars=MIN_PASSWORD_CHARS, error=_(exc.message)
        )
        return page, 400
    return redirect(home)


@blueprint.post("/language")
def choose_language() -> Response:
    chosen = request.form.get("language", "")
    if chosen in LANGUAGES:
        session[SESSION_LANGUAGE] = chosen
    return redirect(_safe_next(request.form.get("next")) or url_for("pages.home"))


@blueprint.get("/")
def home() -> Response:
    user = _signed_in_user()
    if user is None:
        return redirect(url_for("pages.sign_in_page"))
    return redirect(url_for(HOME_BY_ROLE[Role(user.role)]))


@blueprint.get("/admin")
@page_for(Role.ADMIN)
def admin_home() -> str:
    return render_template("admin.html")


def live_url() -> str:
    """Where this page's browser reaches `kokan live`: the configured address, or the host
    the page came from on the live port."""
    config = settings()
    if config.live_url:
        return config.live_url
    host = urlsplit(f"//{request.host}").hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{request.scheme}://{host}:{config.effective_live_port}"


@blueprint.get("/supervisor")
@page_for(Role.SUPERVISOR, Role.ADMIN)
def floor() -> str:
    return render_template("floor.html", live_url=live_url(), sl_formula=kpis.SERVICE_LEVEL_FORMULA)


@blueprint.get("/agent")
@page_for(Role.AGENT)
def desk() -> str:
    try:
        agent_id: str | None = agent_users().agent_for(g.principal.username)
    except NoAgentForUser:
        agent_id = None
    phone = False
    if agent_id is not None and VOICE_SDK.is_file() and browser_phone.configured(settings().twilio):
        try:
            phone = bool(acd_service().agent(agent_id).contact.get("twilio_identity"))
        except UnknownAgent:
            phone = False
    return render_template("desk.html", agent_id=agent_id, live_url=live_url(), browser_phone=phone)


@blueprint.get("/static/vendor/twilio-voice.js")
def voice_sdk() -> Response:
    """Twilio's Voice SDK as npm installed it (./run runs `npm ci`); the library's own code,
    public, so no role is needed to fetch it."""
    if not VOICE_SDK.is_file():
        abort(404)
    return send_file(VOICE_SDK, mimetype="text/javascript", max_age=VENDOR_MAX_AGE_S)


REPORT_DEFAULT_DAYS = 7
"""The reports and staffing pages open on the last week: enough to see a pattern."""


def _default_period() -> tuple[str, str]:
    today = dt.date.today()
    return (today - dt.timedelta(days=REPORT_DEFAULT_DAYS - 1)).isoformat(), (
        today + dt.timedelta(days=1)
    ).isoformat()


def kpi_labels() -> dict[str, Any]:
    """Column names for the reports table, in the page's language."""
    return {
        "group": _("Group"),
        "total": _("Total"),
        "none": _("(none)"),
        "kpis": {
            "offered": _("Offered"),
            "answered": _("Answered"),
            "abandoned": _("Abandoned"),
            "short_abandoned": _("Short abandons"),
            "average_speed_of_answer_s": _("ASA (s)"),
            "average_handle_time_s": _("AHT (s)"),
            "service_level_pct": _("Service level (%)"),
            "abandon_rate_pct": _("Abandon rate (%)"),
            "occupancy_pct": _("Occupancy (%)"),
            "first_contact_resolution_pct": _("First-contact resolution (%)"),
            "csat_pct": _("CSAT (%)"),
            "nps": _("NPS"),
            "ces": _("CES"),
            "surveys": _("Surveys"),
        },
    }


@blueprint.get("/supervisor/reports")
@page_for(Role.SUPERVISOR, Role.ADMIN)
def reports() -> str:
    start, end = _default_period()
    return render_template("reports.html", start=start, end=end, labels=kpi_labels())


@blueprint.get("/supervisor/staffing")
@page_for(Role.SUPERVISOR, Role.ADMIN)
def staffing() -> str:
    start, end = _default_period()
    return render_template("staffing.html", start=start, end=end)


@blueprint.get("/admin/flows")
@page_for(Role.ADMIN)
def flows() -> str:
    return render_template("flows.html")


@blueprint.get("/admin/flows/<name>")
@page_for(Role.ADMIN)
def flow_editor(name: str) -> str:
    return render_template("flow_editor.html", name=name)


@blueprint.get("/admin/acd")
@page_for(Role.ADMIN)
def acd_config() -> str:
    return render_template("acd_config.html", strategies=[str(each) for each in Strategy])


@blueprint.get("/admin/hours")
@page_for(Role.ADMIN)
def hours() -> str:
    return render_template("hours.html")


@blueprint.get("/supervisor/recordings")
@page_for(Role.SUPERVISOR, Role.ADMIN)
def recordings() -> str:
    return render_template("recordings.html")
