"""The web UI in a real browser: Debian's chromium driven by Playwright against a live
`kokan serve` on 127.0.0.1. Screenshots of each page go to test-artifacts/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from acd.models import CallWrapup
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from kokan.config import Settings, TicketsSettings
from kokan.db import Database
from recording.models import Transcript
from tests.conftest import REPO_ROOT, DatabaseFactory, run_kokan, short_tmp_dir
from tests.recording_support import store_recording, tone, wav
from tests.test_serve import ONE_TIME_PASSWORD, Served, _start_serve, database_env
from tickets.services import InboundMessage, receive_message

SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
"""Kept after the run (and ignored by git), so a person can look at every page."""
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NEW_PASSWORD = "a long enough passphrase"
USER_LINE = re.compile(r"one-time password \(shown only now\): (\S+)")


BROWSER_PHONE_SECRET = "the browser phone's API key secret, 32+ bytes long"
UI_CONFIG = f"""
queues:  # the example flows' queues
  billing: {{}}
  support: {{}}
  sales: {{}}
wrapup_codes:
  resolved: 解決 / resolved
  follow_up: 折り返し / follow-up
twilio:
  account_sid: AC{"0" * 32}
  api_key_sid: SK{"1" * 32}
  api_key_secret: "{BROWSER_PHONE_SECRET}"
"""
"""What the pages under test need beyond the defaults: wrap-up codes for the desk, and an
API key so the desk mints browser phone tokens (no auth token: Kokan rings no one)."""


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing: ./run test installs Debian's chromium when root")
    pytest.skip("Debian's chromium is not installed (./run test installs it when root)")


@dataclass
class Ui:
    """A live Kokan and the one-time passwords of its users."""

    kokan: Served
    passwords: dict[str, str]
    database_url: str
    ready: set[str] = field(default_factory=set)
    """Users who chose their own password already (it is NEW_PASSWORD from then on)."""

    @property
    def base_url(self) -> str:
        return self.kokan.base_url


@pytest.fixture(scope="module")
def ui(database_factory: DatabaseFactory) -> Iterator[Ui]:
    """`kokan serve` with its demo admin, and users made with `kokan users create`."""
    root = short_tmp_dir("kokan-ui-")
    started: list[Served] = []
    env = database_env(database_factory)
    env["KOKAN_FLOWS_DIR"] = str(REPO_ROOT / "flows")  # the example flows, published at start
    (root / "config.yaml").write_text(UI_CONFIG, encoding="utf-8")
    try:
        kokan = _start_serve(root, env, started)
        kokan.wait_ready()
        demo = ONE_TIME_PASSWORD.search(kokan.stdout())
        assert demo is not None, kokan.stdout()
        passwords = {"admin": demo.group(1)}
        cli_env = {**env, "KOKAN_DATA_DIR": str(kokan.data_dir)}
        for name, role in (("sato", "supervisor"), ("aiko", "agent")):
            result = run_kokan("users", "create", name, "--role", role, env=cli_env, cwd=root)
            found = USER_LINE.search(result.stdout)
            assert found is not None, result.stdout + result.stderr
            passwords[name] = found.group(1)
        database_url = env.get("DATABASE_URL") or f"sqlite:///{kokan.data_dir / 'kokan.db'}"
        yield Ui(kokan, passwords, database_url)
    finally:
        for each in started:
            each.kill_everything()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-US", viewport={"width": 1366, "height": 768})
    try:
        yield context.new_page()
    finally:
        context.close()


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def first_sign_in(page: Page, ui: Ui, name: str, one_time: str) -> None:
    """Sign in with the one-time password and choose one's own, as a new user does."""
    page.goto(f"{ui.base_url}/login")
    shoot(page, "sign-in")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(one_time)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()
    shoot(page, f"password-{name}")
    page.get_by_label("Current password").fill(one_time)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Save password").click()
    ui.ready.add(name)


def sign_in(page: Page, ui: Ui, name: str) -> None:
    if name not in ui.ready:
        first_sign_in(page, ui, name, ui.passwords[name])
        return
    page.goto(f"{ui.base_url}/login")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.parametrize(
    ("name", "home", "heading"),
    [
        ("admin", "/admin", "Admin"),
        ("sato", "/supervisor", "Live floor"),
        ("aiko", "/agent", "My desk"),
    ],
)
def test_each_role_signs_in_chooses_a_password_and_lands_on_its_page(
    page: Page, ui: Ui, name: str, home: str, heading: str
) -> None:
    first_sign_in(page, ui, name, ui.passwords[name])
    expect(page).to_have_url(f"{ui.base_url}{home}")
    expect(page.get_by_role("heading", name=heading)).to_be_visible()
    shoot(page, f"home-{name}")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_an_agent_cannot_reach_a_supervisors_page(page: Page, ui: Ui) -> None:
    sign_in(page, ui, "aiko")
    expect(page.get_by_role("heading", name="My desk")).to_be_visible()
    answer = page.goto(f"{ui.base_url}/supervisor")
    assert answer is not None
    assert answer.status == 403
    expect(page.get_by_role("alert")).to_contain_text("This page is not for your role.")
    shoot(page, "forbidden-agent")

    # nor another agent's recording, by its address, with the agent's own session
    served = Settings(data_dir=ui.kokan.data_dir, database_url=ui.database_url)
    database = Database(ui.database_url)
    try:
        someone_elses = store_recording(
            database, served, wav(tone(1.0)), agent_id="ben", duration_ms=1000
        )
    finally:
        database.dispose()
    for path in (f"/api/recordings/{someone_elses}", f"/api/recordings/{someone_elses}/audio"):
        refused = page.request.get(f"{ui.base_url}{path}")
        assert refused.status == 403, (path, refused.status)


def test_the_page_switches_to_japanese(page: Page, ui: Ui) -> None:
    page.goto(f"{ui.base_url}/login")
    page.get_by_role("button", name="日本語").click()
    expect(page.get_by_role("heading", name="サインイン")).to_be_visible()
    assert page.locator("html").get_attribute("lang") == "ja"
    shoot(page, "sign-in-ja")


HAND_BACK_DEADLINE_S = 10
"""The router hands an offer it cannot ring back at once; ten seconds is plenty on a busy CI."""
POLL_S = 0.05
FLOOR_DEADLINE_MS = 1_000
"""The issue's promise: a waiting call shows on the floor within a second."""


def answered_through_the_acd(acd: AcdService, call_id: str, agent: str) -> None:
    """Make the agent available and answer the offer it gets. `kokan router` routes too;
    when it wins the offer (it cannot ring anyone without Twilio), it hands the call back
    and the agent turns not-ready: try again, a few times."""
    for _attempt in range(5):
        offers = acd.set_status(agent, "available")
        if offers:
            (offer,) = offers
            assert offer.call_id == call_id
            acd.answer(call_id, agent)
            return
        deadline = time.monotonic() + HAND_BACK_DEADLINE_S
        while acd.agent(agent).status != "not-ready" and time.monotonic() < deadline:
            time.sleep(POLL_S)
    pytest.fail("the router took every offer")


def test_the_live_floor_shows_a_waiting_call_at_once_and_drops_it_when_answered(
    page: Page, ui: Ui
) -> None:
    acd = AcdService(redis.Redis(unix_socket_path=str(ui.kokan.socket_path)))
    acd.put_queue("floor-test", QueueConfig())
    acd.put_agent("floor-agent", AgentConfig(queues=["floor-test"]))
    acd.set_status("floor-agent", "offline")
    sign_in(page, ui, "sato")
    expect(page.get_by_role("heading", name="Live floor")).to_be_visible()
    expect(page.locator("#live-state")).to_have_attribute("data-live", "yes")
    waiting = page.locator('#queues tr[data-queue="floor-test"] [data-field="waiting"]')
    expect(waiting).to_have_text("0")

    call_id = f"CA{uuid.uuid4().hex}"
    acd.join(call_id, "floor-test", caller="+819012345678")
    expect(waiting).to_have_text("1", timeout=FLOOR_DEADLINE_MS)
    shoot(page, "floor-waiting")

    answered_through_the_acd(acd, call_id, "floor-agent")
    expect(waiting).to_have_text("0", timeout=FLOOR_DEADLINE_MS)
    agent_row = page.locator('#agents tr[data-agent="floor-agent"]')
    expect(agent_row).to_contain_text("on-call", timeout=FLOOR_DEADLINE_MS)
    shoot(page, "floor-answered")


def test_an_agent_gets_a_screen_pop_with_the_callers_last_sms(page: Page, ui: Ui) -> None:
    caller = "+819012345678"
    database = Database(ui.database_url)
    try:
        with database.unit_of_work() as session:
            receive_message(
                session,
                TicketsSettings(),
                InboundMessage(
                    channel="sms",
                    from_e164=caller,
                    from_address=caller,
                    to_address="+81312345678",
                    body="荷物がまだ届きません。注文番号 A17",
                    provider="twilio",
                    provider_message_id=f"SM{uuid.uuid4().hex}",
                ),
            )
    finally:
        database.dispose()
    acd = AcdService(redis.Redis(unix_socket_path=str(ui.kokan.socket_path)))
    acd.put_queue("pop-test", QueueConfig())
    acd.put_agent("aiko", AgentConfig(queues=["pop-test"]))
    acd.set_status("aiko", "offline")
    sign_in(page, ui, "aiko")
    expect(page.locator("#my-status")).to_have_text("offline")
    expect(page.locator("body")).to_have_attribute("data-live", "yes")

    call_id = f"CA{uuid.uuid4().hex}"
    acd.join(call_id, "pop-test", caller=caller)
    answered_through_the_acd(acd, call_id, "aiko")
    pop = page.locator("#screen-pop")
    expect(pop).to_be_visible(timeout=FLOOR_DEADLINE_MS * 3)
    expect(page.locator("#pop-caller")).to_have_text(caller)
    expect(page.locator("#pop-timeline")).to_contain_text("荷物がまだ届きません。注文番号 A17")
    expect(page.locator("#pop-timeline li")).to_have_count(1)  # drawn once, not per cue
    expect(page.locator("#pop-tickets li")).to_have_count(1)
    expect(page.locator("#pop-tickets")).to_contain_text("sms")
    expect(page.locator("#my-status")).to_have_text("on-call")
    shoot(page, "desk-screen-pop")

    # during the call: the ticket's fields, an internal note, a reply on its channel
    fields = page.locator("#fields-form")
    fields.get_by_label("Priority").select_option("high")
    fields.get_by_label("Tags, comma-separated").fill("delivery, A17")
    fields.get_by_role("button", name="Save fields").click()
    expect(page.locator("#work-state")).to_have_text("Saved.")
    page.get_by_label("Internal note (the customer never sees it)").fill("配送業者に確認中")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator("#pop-timeline")).to_contain_text("note · internal · 配送業者に確認中")
    page.get_by_label("Reply to the customer on the ticket's channel").fill("確認してご連絡します")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("#pop-timeline")).to_contain_text("sms · outbound · 確認してご連絡します")
    ticket = page.evaluate(
        "async (id) => (await fetch(`/api/tickets/${id}`)).json()",
        page.locator("#work-ticket").input_value(),
    )
    assert ticket["priority"] == "high"
    assert ticket["tags"] == ["delivery", "A17"]
    shoot(page, "desk-ticket-work")

    # after it: the wrap-up code, while the wrap-up timer runs
    acd.hangup(call_id)
    expect(page.locator("#my-status")).to_contain_text("Wrap-up", timeout=FLOOR_DEADLINE_MS * 3)
    wrap = page.locator("#wrapup-form")
    wrap.get_by_label("Wrap-up code").select_option(label="折り返し / follow-up")
    wrap.get_by_label("Wrap-up note").fill("明日の午前に再確認")
    wrap.get_by_role("button", name="Save wrap-up").click()
    expect(page.locator("#wrapup-state")).to_have_text("Saved.")
    shoot(page, "desk-wrap-up")
    database = Database(ui.database_url)
    try:
        with database.sessions() as session:
            stored = session.scalars(select(CallWrapup).where(CallWrapup.call_id == call_id)).one()
            assert (stored.agent_id, stored.code, stored.note) == (
                "aiko",
                "follow_up",
                "明日の午前に再確認",
            )
    finally:
        database.dispose()


def test_a_supervisor_reads_the_reports_and_plans_staff_with_erlang_c(page: Page, ui: Ui) -> None:
    sign_in(page, ui, "sato")
    page.get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", name="Reports")).to_be_visible()
    expect(page.locator("#formula")).to_contain_text("Service level = calls answered within")
    total = page.locator("#report tbody tr").last
    expect(total.locator("th")).to_have_text("Total")
    expect(total.locator('[data-kpi="offered"]')).to_have_text(re.compile(r"^\d+$"))
    groups = page.locator("#report tbody tr").count() - 1
    expect(page.locator("#volume-chart rect[data-kpi]")).to_have_count(2 * groups)
    expect(page.locator("#volume-chart text")).to_have_count(groups)
    csv_url = page.locator("#csv-link").get_attribute("href")
    assert csv_url is not None
    csv = page.request.get(f"{ui.base_url}{csv_url}")
    assert csv.ok
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.body().startswith("\ufeff".encode())  # Excel reads it as UTF-8
    shoot(page, "reports")

    page.get_by_role("link", name="Staffing").click()
    form = page.locator("#staffing-form")
    for name, value in {
        "calls_per_interval": "100",  # 100 calls x 180 s per 30 min = 10 erlangs
        "interval_minutes": "30",
        "average_handle_time_seconds": "180",
        "target_service_level_pct": "80",
        "target_answer_seconds": "20",
        "max_occupancy_pct": "100",
        "shrinkage_pct": "0",
    }.items():
        form.locator(f'[name="{name}"]').fill(value)
    form.get_by_role("button", name="Calculate").click()
    # the textbook case: 10 erlangs at 80/20 need 14 agents
    expect(page.locator('[data-field="agents_on_phones"]')).to_have_text("14")
    expect(page.locator('[data-field="service_level_pct"]')).to_have_text("88.84")
    shoot(page, "staffing")


def test_an_admin_breaks_a_flow_sees_the_error_at_its_line_fixes_publishes_and_rolls_back(
    page: Page, ui: Ui
) -> None:
    sign_in(page, ui, "admin")
    page.get_by_role("link", name="Call flows").first.click()
    page.get_by_role("link", name="survey", exact=True).click()
    source = page.locator("#source")
    expect(source).to_have_value(re.compile(r"start:"))
    good = source.input_value()
    first_version = int(page.locator("#versions li").first.get_attribute("data-version") or 0)

    lines = good.split("\n")
    target = next(i for i, line in enumerate(lines) if re.match(r"\s+next: \S", line))
    broken = lines.copy()
    broken[target] = re.sub(r"next: \S+", "next: nowhere-at-all", broken[target])
    source.fill("\n".join(broken))
    page.get_by_role("button", name="Check", exact=True).click()
    problem = page.locator(f'#problems li[data-line="{target + 1}"]')
    expect(problem).to_contain_text("nowhere-at-all")
    expect(page.locator("#gutter")).to_contain_text(f"▶{target + 1:>4}")
    shoot(page, "flow-broken")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator("#flow-state")).to_contain_text("nothing was stored")  # refused
    expect(problem).to_be_visible()

    fixed = lines.copy()
    fixed.append("# checked in the browser")
    source.fill("\n".join(fixed))
    page.get_by_role("button", name="Check", exact=True).click()
    expect(page.locator("#no-problems")).to_be_visible()
    page.get_by_role("button", name="Diff against the published version").click()
    expect(page.locator("#diff-text")).to_contain_text("+# checked in the browser")
    page.locator("#note").fill("a comment")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator("#flow-state")).to_contain_text(f"Published version {first_version + 1}.")
    expect(page.locator("#audit")).to_contain_text("flow.published")
    shoot(page, "flow-published")

    older = page.locator(f'#versions li[data-version="{first_version}"]')
    older.get_by_role("button", name="Roll back to this version").click()
    expect(page.locator("#flow-state")).to_contain_text(f"Version {first_version} is active again.")
    expect(page.locator("#audit")).to_contain_text("flow.rolled_back")
    expect(source).not_to_have_value(re.compile("checked in the browser"))
    shoot(page, "flow-rolled-back")


def test_a_supervisor_finds_a_recording_by_its_words_and_seeks_from_the_transcript(
    page: Page, ui: Ui
) -> None:
    served = Settings(data_dir=ui.kokan.data_dir, database_url=ui.database_url)
    database = Database(ui.database_url)
    try:
        recording_id = store_recording(
            database, served, wav(tone(4.0)), agent_id="aiko", duration_ms=4000
        )
        words = [
            {"word": w, "start_ms": 1000 * i, "end_ms": 1000 * i + 800, "confidence": 1.0}
            for i, w in enumerate(["환불", "여섯", "상담원"])
        ]
        with database.unit_of_work() as session:
            session.add(
                Transcript(
                    recording_id=recording_id, text="환불 여섯 상담원", words=words, model="m"
                )
            )
    finally:
        database.dispose()
    sign_in(page, ui, "sato")
    page.get_by_role("link", name="Recordings").click()
    page.get_by_label("Words heard").fill("상담원")
    page.get_by_role("button", name="Search").click()
    row = page.locator(f'#recordings tr[data-recording="{recording_id}"]')
    expect(row).to_contain_text("aiko")
    row.get_by_role("button").click()
    expect(page.locator("#transcript .word")).to_have_count(3)
    audio = page.locator("#audio")
    page.wait_for_function("document.querySelector('#audio').duration > 3.9")
    page.locator("#transcript .word", has_text="상담원").click()
    page.wait_for_function("document.querySelector('#audio').currentTime >= 2.0")
    assert audio.evaluate("a => a.duration") == pytest.approx(4.0, abs=0.1)
    shoot(page, "recordings")


def test_the_agents_browser_phone_loads_twilios_sdk_with_a_kokan_token(page: Page, ui: Ui) -> None:
    acd = AcdService(redis.Redis(unix_socket_path=str(ui.kokan.socket_path)))
    acd.put_agent("aiko", AgentConfig(twilio_identity="aiko.desk"))
    acd.set_status("aiko", "offline")
    sign_in(page, ui, "aiko")
    phone = page.locator("#phone-state")
    expect(page.get_by_role("heading", name="Browser phone")).to_be_visible()
    expect(phone).to_have_attribute("data-identity", "aiko.desk")
    assert page.evaluate("typeof window.Twilio.Device") == "function"
    # no Twilio cloud here: the SDK tries to register and the page says it is not connected
    expect(phone).to_have_attribute("data-state", re.compile("connecting|offline"))
    shoot(page, "desk-browser-phone")
    acd.put_agent("aiko", AgentConfig())
    page.reload()
    expect(page.get_by_role("heading", name="My desk")).to_be_visible()
    expect(page.locator("#browser-phone")).to_have_count(0)


def test_an_admin_edits_skills_queues_and_agents_with_the_apis_checks(page: Page, ui: Ui) -> None:
    sign_in(page, ui, "admin")
    page.get_by_role("link", name="Queues, skills and agents").click()
    skills = page.locator("#skill-form")
    skills.get_by_label("Skill").fill("korean")
    skills.get_by_label("Description").fill("한국어")
    skills.get_by_role("button", name="Save skill").click()
    expect(page.locator("#skills")).to_contain_text("한국어")

    queue = page.locator("#queue-form")
    queue.get_by_label("Name").fill("ui-queue")
    queue.get_by_label("Required skills (skill:level, …)").fill("korean:9")
    queue.get_by_role("button", name="Save queue").click()
    expect(page.locator("#queue-error")).to_contain_text("skills.korean")
    expect(queue.locator('[name="skills"]')).to_have_attribute("aria-invalid", "true")
    shoot(page, "admin-queue-error")
    queue.get_by_label("Required skills (skill:level, …)").fill("korean:3")
    queue.get_by_label("Strategy").select_option("ring_all")
    queue.get_by_role("button", name="Save queue").click()
    row = page.locator('#queues tr[data-queue="ui-queue"]')
    expect(row).to_contain_text("ring_all")
    expect(row).to_contain_text("korean:3")
    expect(queue.locator('[name="skills"]')).not_to_have_attribute("aria-invalid", "true")

    agent = page.locator("#agent-form")
    agent.get_by_label("Agent id").fill("ui-agent")
    agent.get_by_label("Name", exact=True).fill("김 민지")
    agent.get_by_label("Skills (skill:level, …)").fill("korean:4")
    agent.get_by_label("Queues (comma-separated)").fill("ui-queue")
    agent.get_by_label("Phone number (E.164)").fill("0312345678")
    agent.get_by_role("button", name="Save agent").click()
    expect(agent.locator('[name="phone"]')).to_have_attribute("aria-invalid", "true")
    agent.get_by_label("Phone number (E.164)").fill("+81312345678")
    agent.get_by_role("button", name="Save agent").click()
    expect(page.locator('#agents tr[data-agent="ui-agent"]')).to_contain_text("김 민지")
    shoot(page, "admin-acd-config")
    stored = page.evaluate("async () => (await fetch('/api/acd/agents/ui-agent/config')).json()")[
        "config"
    ]
    assert (stored["skills"], stored["queues"], stored["phone"]) == (
        {"korean": 4},
        ["ui-queue"],
        "+81312345678",
    )

    page.locator('#queues tr[data-queue="ui-queue"]').get_by_role("button", name="Edit").click()
    expect(queue.get_by_label("Name")).to_have_value("ui-queue")
    queue.get_by_label("Maximum wait (s), empty: none").fill("120")
    queue.get_by_label("Callback key").fill("9")
    queue.get_by_label("Hold music (file under flows/ or URL)").fill("prompts/none.wav")
    queue.get_by_role("button", name="Save queue").click()
    expect(queue.locator('[name="hold_music"]')).to_have_attribute("aria-invalid", "true")
    queue.get_by_label("Hold music (file under flows/ or URL)").fill("prompts/hold.wav")
    queue.get_by_role("button", name="Save queue").click()
    expect(row).to_contain_text("120")
    stored_queue = page.evaluate(
        "async () => (await fetch('/api/acd/queues/ui-queue/config')).json()"
    )["config"]
    assert (stored_queue["callback_key"], stored_queue["hold_music"]) == ("9", "prompts/hold.wav")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('#agents tr[data-agent="ui-agent"]').get_by_role("button", name="Delete").click()
    expect(page.locator('#agents tr[data-agent="ui-agent"]')).to_have_count(0)


def test_an_admin_changes_business_hours_and_publishes_them_as_a_flow_version(
    page: Page, ui: Ui
) -> None:
    sign_in(page, ui, "admin")
    page.get_by_role("link", name="Business hours and holidays").first.click()
    page.get_by_label("Flow").select_option("main")
    office = page.locator('form[data-hours="office"]')
    expect(office.get_by_label("Public holidays of (country code)")).to_have_value("JP")
    expect(office.locator(".upcoming li").first).to_be_attached()
    weekly = office.locator('[name="weekly"]')
    expect(weekly).to_have_value("mon-fri: 09:00-18:00")
    before = page.evaluate("async () => (await fetch('/api/flows/main')).json()")["active_version"]

    weekly.fill("mon-fri: 9 to 6")
    office.get_by_role("button", name="Save and publish").click()
    expect(office.locator(".error")).to_contain_text("weekly")
    expect(weekly).to_have_attribute("aria-invalid", "true")
    weekly.fill("mon-fri: 09:00-17:00")  # a flow test has a caller after 17:00
    office.get_by_role("button", name="Save and publish").click()
    expect(office.locator(".error")).to_contain_text("The flow's tests fail with these hours")
    shoot(page, "hours-refused")

    weekly.fill("mon-fri: 09:00-18:00\nsat: 10:00-12:00")
    office.get_by_label("Note for the audit log").fill("土曜の午前も受付")
    office.get_by_role("button", name="Save and publish").click()
    expect(page.locator("#saved")).to_have_text(f"Published as version {before + 1}.")
    expect(page.locator('form[data-hours="office"] [name="weekly"]')).to_have_value(
        "mon-fri: 09:00-18:00\nsat: 10:00-12:00"
    )
    shoot(page, "hours-published")
