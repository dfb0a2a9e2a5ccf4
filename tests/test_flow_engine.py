"""The transport-free engine: (state, event) in -> (actions, new state) out, node by node."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from ivr import engine as e
from ivr.engine import (
    MAX_HOPS,
    CallState,
    Engine,
    Enqueue,
    Environment,
    Hangup,
    Input,
    Listen,
    NoInput,
    Play,
    Record,
    Recorded,
    Say,
    Transfer,
    Turn,
)
from ivr.http_fetch import fetch_json
from ivr.loader import FlowInvalid, parse_flow
from ivr.model import Flow
from tests.local_http import serving

JST = dt.timezone(dt.timedelta(hours=9))
WEEKDAY = dt.datetime(2026, 11, 24, 10, 0, tzinfo=JST)
CALLER = "+819012345678"
CALLED = "+81312345678"


class DictFlows:
    """A FlowSource over YAML texts, with numbered versions like published flows."""

    def __init__(self, **texts: str) -> None:
        self.versions: dict[str, dict[int, Flow]] = {}
        for name, text in texts.items():
            self.add(name, text)

    def add(self, name: str, text: str) -> int:
        numbered = self.versions.setdefault(name, {})
        number = len(numbered) + 1
        numbered[number] = parse_flow(text, f"{name}.yaml", name=name).flow
        return number

    def active(self, name: str) -> tuple[int, Flow]:
        number = max(self.versions[name])
        return number, self.versions[name][number]

    def version(self, name: str, version: int) -> Flow:
        return self.versions[name][version]


def no_fetch(method: str, url: str, timeout: float) -> Any:
    raise AssertionError(f"unexpected fetch of {url}")


def make_engine(
    flows: DictFlows, fetch: e.FetchJson = no_fetch, at: dt.datetime = WEEKDAY
) -> Engine:
    return Engine(flows, Environment(now=lambda: at, fetch_json=fetch))


def start(text: str, *, fetch: e.FetchJson = no_fetch, **others: str) -> tuple[Engine, Turn]:
    engine = make_engine(DictFlows(main=text, **others), fetch)
    return engine, engine.start("main", "CA1", CALLER, CALLED)


def said(turn: Turn) -> list[str]:
    texts = []
    for action in turn.actions:
        prompts = action.prompts if isinstance(action, Listen | Record) else (action,)
        texts += [prompt.text for prompt in prompts if isinstance(prompt, Say)]
    return texts


def listen(turn: Turn) -> Listen:
    [action] = [action for action in turn.actions if isinstance(action, Listen)]
    assert turn.actions[-1] is action, "a Listen is the last action of a turn"
    return action


# ---- say, play, placeholders, hangup, goto, survey ----

SAY_FLOW = """\
start: hello
voices: {ja: Polly.Mizuki, en: Polly.Joanna}
nodes:
  hello:
    type: say
    text:
      - ja: "{name}様、こんにちは。"
        en: "Hello {name}."
      - say: "番号は{missing}です"
        voice: Polly.Takumi
    next: chime
  chime:
    type: play
    file: prompts/chime.wav
    next: jump
  jump:
    type: goto
    to: later
  later:
    type: survey
    flow: csat
    next: bye
  bye:
    type: hangup
    prompt: さようなら
"""


def test_say_play_goto_survey_and_hangup() -> None:
    flows = DictFlows(main=SAY_FLOW)
    turn = make_engine(flows).start("main", "CA1", CALLER, CALLED)
    assert turn.actions == (
        Say("様、こんにちは。", "ja", "Polly.Mizuki"),
        Say("番号はです", "ja", "Polly.Takumi"),
        Play("prompts/chime.wav"),
        Say("さようなら", "ja", "Polly.Mizuki"),
        Hangup(),
    )
    state = turn.state
    assert state.path == ["hello", "chime", "jump", "later", "bye"]
    assert state.survey == "csat"
    assert state.outcome == {"kind": "hung-up"}
    assert state.finished
    assert state.node is None
    assert (state.flow, state.version, state.caller, state.called) == ("main", 1, CALLER, CALLED)


def test_placeholders_are_filled_from_variables() -> None:
    text = SAY_FLOW.replace("start: hello", "start: setup").replace(
        "nodes:\n",
        "nodes:\n  setup:\n    type: set\n    vars: {name: \"'山田'\", missing: 42}\n    next: hello\n",
    )
    _, turn = start(text)
    assert said(turn)[:2] == ["山田様、こんにちは。", "番号は42です"]


def test_placeholders_also_know_the_caller_the_called_number_and_the_language() -> None:
    text = """\
start: hi
nodes:
  hi:
    type: hangup
    prompt: "{caller} → {called} ({language}) {caller_name}"
"""
    _, turn = start(text)
    assert said(turn) == [f"{CALLER} → {CALLED} (ja) "]


# ---- menu ----

MENU_FLOW = """\
start: menu
nodes:
  menu:
    type: menu
    prompt: {ja: 請求は1を, en: Billing press 1}
    options: {"1": billing, "2": sales}
    timeout: 7
    retries: 3
    invalid_prompt: 番号が違います
    timeout_prompt: 入力がありません
    on_failure: operator
  billing:
    type: queue
    queue: billing
  sales:
    type: queue
    queue: sales
  operator:
    type: transfer
    to: "+81312340000"
    prompt: オペレーターにおつなぎします
"""


def test_a_menu_listens_for_one_key_and_follows_the_option() -> None:
    engine, turn = start(MENU_FLOW)
    heard = listen(turn)
    assert heard == Listen(
        prompts=(Say("請求は1を", "ja"),),
        digits=True,
        speech=False,
        timeout=7,
        min_digits=1,
        max_digits=1,
        language="ja",
    )
    assert turn.state.node == "menu"
    assert not turn.state.finished
    chosen = engine.resume(turn.state, Input(digits="2"))
    assert chosen.actions == (Enqueue("sales", 0, {}),)
    assert chosen.state.outcome == {"kind": "queued", "queue": "sales", "priority": 0, "skills": {}}
    assert chosen.state.path == ["menu", "sales"]
    assert chosen.state.step == 1


def test_a_menu_retries_with_invalid_and_timeout_prompts_then_on_failure() -> None:
    engine, turn = start(MENU_FLOW)
    wrong = engine.resume(turn.state, Input(digits="9"))
    assert listen(wrong).prompts == (Say("番号が違います", "ja"), Say("請求は1を", "ja"))
    assert (wrong.state.node, wrong.state.attempts) == ("menu", 1)
    silent = engine.resume(wrong.state, NoInput())
    assert listen(silent).prompts == (Say("入力がありません", "ja"), Say("請求は1を", "ja"))
    assert silent.state.attempts == 2
    failed = engine.resume(silent.state, Input(digits="#"))
    assert failed.actions == (Say("オペレーターにおつなぎします", "ja"), Transfer("+81312340000"))
    assert failed.state.outcome == {"kind": "transferred", "to": "+81312340000"}
    assert failed.state.path == ["menu", "operator"]


def test_a_right_key_after_a_wrong_one_goes_on_and_resets_the_attempts() -> None:
    engine, turn = start(MENU_FLOW)
    wrong = engine.resume(turn.state, Input(digits="5"))
    right = engine.resume(wrong.state, Input(digits="1"))
    assert right.actions == (Enqueue("billing", 0, {}),)
    assert right.state.attempts == 0
    assert right.state.step == 2


@pytest.mark.parametrize(
    "digits", ["1" * 10_000, "\u0661", "\uff11", "12", "", "1\x00", "🙂"], ids=repr
)
def test_a_menu_treats_garbage_keys_as_invalid_input(digits: str) -> None:
    engine, turn = start(MENU_FLOW)
    again = engine.resume(turn.state, Input(digits=digits))
    assert listen(again).prompts[0] == Say("番号が違います", "ja")
    assert again.state.attempts == 1
    assert again.state.outcome is None


# ---- gather ----

GATHER_FLOW = """\
start: ask
nodes:
  ask:
    type: gather
    prompt: ご注文番号を入力してください
    into: order_id
    min_digits: 6
    max_digits: 10
    finish_on_key: "#"
    timeout: 8
    retries: 3
    invalid_prompt: 6桁から10桁です
    next: echo
    on_failure: bye
  echo:
    type: say
    text: "番号{order_id}"
    next: bye
  bye:
    type: hangup
"""


def test_gather_listens_for_digits_with_length_and_finish_key() -> None:
    _, turn = start(GATHER_FLOW)
    assert listen(turn) == Listen(
        prompts=(Say("ご注文番号を入力してください", "ja"),),
        digits=True,
        speech=False,
        timeout=8,
        min_digits=6,
        max_digits=10,
        finish_on_key="#",
        language="ja",
    )


@pytest.mark.parametrize(
    ("digits", "stored"),
    [
        ("123456#", "123456"),
        ("123456", "123456"),
        ("1234567890", "1234567890"),
        ("0000001#", "0000001"),
    ],
)
def test_gather_accepts_digits_within_the_lengths(digits: str, stored: str) -> None:
    engine, turn = start(GATHER_FLOW)
    done = engine.resume(turn.state, Input(digits=digits))
    assert done.state.variables == {"order_id": stored}
    assert said(done) == [f"番号{stored}"]
    assert done.actions[-1] == Hangup()


@pytest.mark.parametrize(
    "digits",
    [
        "12345#",
        "12345678901",
        "12a456",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "\u0661\u0662\u0663\u0664\u0665\u0666",
        "1" * 10_000,
        "1" * 65,
        "#",
        "",
    ],
    ids=lambda d: repr(d[:12]),
)
def test_gather_refuses_digits_that_are_not_a_valid_answer(digits: str) -> None:
    engine, turn = start(GATHER_FLOW)
    again = engine.resume(turn.state, Input(digits=digits))
    assert listen(again).prompts == (
        Say("6桁から10桁です", "ja"),
        Say("ご注文番号を入力してください", "ja"),
    )
    assert "order_id" not in again.state.variables
    assert again.state.attempts == 1


def test_gather_gives_up_after_its_retries() -> None:
    engine, turn = start(GATHER_FLOW)
    for _ in range(2):
        turn = engine.resume(turn.state, NoInput())
        assert isinstance(turn.actions[-1], Listen)
    turn = engine.resume(turn.state, Input(speech="一二三"))  # speech is not accepted here
    assert turn.actions == (Hangup(),)
    assert turn.state.path == ["ask", "bye"]


SPEECH_FLOW = """\
start: confirm
language: ja
nodes:
  confirm:
    type: gather
    input: speech
    prompt: よろしいですか
    into: answer
    hints: [はい, いいえ]
    phrases: [はい, いいえ, "Yes"]
    retries: 2
    next: said
    on_failure: bye
  said:
    type: say
    text: "{answer}"
    next: bye
  free:
    type: gather
    input: digits speech
    prompt: ご用件をどうぞ
    into: topic
    next: bye
    on_failure: bye
  bye:
    type: hangup
"""


def test_speech_gather_passes_hints_and_phrases_to_the_recogniser() -> None:
    _, turn = start(SPEECH_FLOW)
    heard = listen(turn)
    assert (heard.speech, heard.digits) == (True, False)
    assert heard.hints == ("はい", "いいえ")
    assert heard.phrases == ("はい", "いいえ", "Yes")
    assert heard.language == "ja"


@pytest.mark.parametrize(
    ("speech", "stored"),
    [
        ("はい", "はい"),
        ("はい。", "はい"),
        ("いいえ\uff01", "いいえ"),  # a full-width exclamation mark
        ("「はい」", None),
        ("  はい、 ", "はい"),
        ("yes.", "Yes"),
        ("YES!", "Yes"),
        ("はい、そうです", None),
        ("たぶん", None),
        ("。", None),
        ("は" * 100_000, None),
    ],
    ids=lambda value: repr(value)[:16],
)
def test_speech_is_matched_against_the_phrases_without_punctuation(
    speech: str, stored: str | None
) -> None:
    engine, turn = start(SPEECH_FLOW)
    answered = engine.resume(turn.state, Input(speech=speech))
    if stored is None:
        assert answered.state.node == "confirm"
        assert answered.state.attempts == 1
        assert "answer" not in answered.state.variables
    else:
        assert answered.state.variables["answer"] == stored
        assert said(answered) == [stored]


def test_free_speech_without_phrases_is_kept_trimmed() -> None:
    engine = make_engine(DictFlows(main=SPEECH_FLOW.replace("start: confirm", "start: free")))
    turn = engine.start("main", "CA1", CALLER, CALLED)
    assert (listen(turn).speech, listen(turn).digits) == (True, True)
    spoken = engine.resume(turn.state, Input(speech="  請求書の  再発行。"))
    assert spoken.state.variables["topic"] == "請求書の 再発行"
    keyed = engine.resume(turn.state, Input(digits="42#"))
    assert keyed.state.variables["topic"] == "42"


# ---- branch and set (incl. switching the language) ----

LANGUAGE_FLOW = """\
start: pick
language: ja
voices: {ja: Polly.Mizuki, en: Polly.Joanna}
nodes:
  pick:
    type: menu
    prompt: [{ja: 日本語は1}, {en: English press 2}]
    options: {"1": ja, "2": en}
    on_failure: ja
  ja:
    type: set
    vars: {language: "'ja'"}
    next: route
  en:
    type: set
    vars: {language: "'en'", vip: true, count: 3, ratio: 0.5, greeting: "upper('hi ') + caller"}
    next: route
  route:
    type: branch
    rules:
      - when: startswith(caller, '+1')
        next: us
      - when: vip and language == 'en'
        next: welcome_vip
    otherwise: welcome
  us:
    type: hangup
    prompt: Goodbye America
  welcome_vip:
    type: say
    text: {ja: VIPのお客様, en: "Dear VIP {greeting}"}
    next: welcome
  welcome:
    type: hangup
    prompt: {ja: ありがとうございました, en: Thank you}
"""


def test_set_switches_the_language_of_every_later_prompt() -> None:
    engine, turn = start(LANGUAGE_FLOW)
    assert listen(turn).prompts == (
        Say("日本語は1", "ja", "Polly.Mizuki"),
        Say("English press 2", "en", "Polly.Joanna"),
    )
    english = engine.resume(turn.state, Input(digits="2"))
    assert english.state.language == "en"
    assert english.state.variables == {
        "language": "en",
        "vip": True,
        "count": 3,
        "ratio": 0.5,
        "greeting": "HI +819012345678",
    }
    assert english.actions == (
        Say("Dear VIP HI +819012345678", "en", "Polly.Joanna"),
        Say("Thank you", "en", "Polly.Joanna"),
        Hangup(),
    )
    assert english.state.path == ["pick", "en", "route", "welcome_vip", "welcome"]
    japanese = engine.resume(turn.state, Input(digits="1"))
    assert japanese.state.language == "ja"
    assert said(japanese) == ["ありがとうございました"]
    assert japanese.state.path[-2:] == ["route", "welcome"]


def test_branch_takes_the_first_rule_that_matches() -> None:
    engine = make_engine(DictFlows(main=LANGUAGE_FLOW))
    turn = engine.start("main", "CA1", "+12025550123", CALLED)
    done = engine.resume(turn.state, Input(digits="2"))  # vip and English, but +1 comes first
    assert said(done) == ["Goodbye America"]


def test_a_prompt_without_the_callers_language_falls_back_to_the_flow_language() -> None:
    text = LANGUAGE_FLOW.replace("{ja: ありがとうございました, en: Thank you}", "{ja: ありがとう}")
    engine, turn = start(text)
    done = engine.resume(turn.state, Input(digits="2"))
    assert done.actions[-2] == Say("ありがとう", "ja", "Polly.Mizuki")


# ---- http, against a real local HTTP server ----


class _Api(BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        if self.path.startswith("/orders/"):
            self._answer(200, json.dumps({"status": "発送済み", "customer": {"vip": True}}))
        elif self.path == "/broken":
            self._answer(500, json.dumps({"error": "boom"}))
        elif self.path == "/slow":
            time.sleep(1.5)
            self._answer(200, json.dumps({"status": "late"}))
        elif self.path == "/text":
            self._answer(200, "<html>not json</html>", "text/html")
        elif self.path == "/big":
            self._answer(200, json.dumps({"status": "x" * 10_000, "items": [1, 2]}))
        else:
            self._answer(404, "{}")

    def _answer(self, status: int, body: str, kind: str = "application/json") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with serving(_Api) as url:
        yield url


def http_flow(url: str) -> str:
    return f"""\
start: ask
nodes:
  ask:
    type: gather
    prompt: 番号をどうぞ
    into: order_id
    next: lookup
    on_failure: bye
  lookup:
    type: http
    url: "{url}"
    timeout: 0.5
    into:
      order_status: status
      vip: customer.vip
      items: items
    next: found
    on_error: sorry
  found:
    type: queue
    queue: support
    priority: "10 if vip else 0"
    skills: {{support: 2}}
    prompt: "{{order_status}}"
  sorry:
    type: say
    text: "確認できません ({{http_error}})"
    next: bye
  bye:
    type: hangup
"""


def test_http_fetches_json_into_variables_and_the_priority_expression_uses_them(
    api: str,
) -> None:
    _Api.paths.clear()
    engine, turn = start(http_flow(api + "/orders/{order_id}"), fetch=fetch_json)
    done = engine.resume(turn.state, Input(digits="1234#"))
    assert _Api.paths == ["/orders/1234"]
    assert done.state.variables == {
        "order_id": "1234",
        "order_status": "発送済み",
        "vip": True,
        "items": None,
    }
    assert done.actions == (Say("発送済み", "ja"), Enqueue("support", 10, {"support": 2}))
    assert done.state.outcome == {
        "kind": "queued",
        "queue": "support",
        "priority": 10,
        "skills": {"support": 2},
    }


def test_http_url_placeholders_are_url_encoded(api: str) -> None:
    _Api.paths.clear()
    text = (
        http_flow(api + "/orders/{who}?q={order_id}")
        .replace("start: ask", "start: who")
        .replace(
            "nodes:\n",
            "nodes:\n  who:\n    type: set\n    vars: {who: \"'a b/../c&d'\"}\n    next: ask\n",
        )
    )
    engine, turn = start(text, fetch=fetch_json)
    engine.resume(turn.state, Input(digits="1"))
    assert _Api.paths == ["/orders/a%20b%2F..%2Fc%26d?q=1"]


def test_http_large_text_and_lists_are_kept_bounded(api: str) -> None:
    engine, turn = start(http_flow(api + "/big"), fetch=fetch_json)
    done = engine.resume(turn.state, Input(digits="1"))
    assert done.state.variables["order_status"] == "x" * e.MAX_VARIABLE_TEXT
    assert done.state.variables["items"] == "[1, 2]"
    assert len(json.dumps(done.state.to_json())) < 3 * e.MAX_VARIABLE_TEXT


@pytest.mark.parametrize(
    ("path", "error"),
    [("/broken", "FetchError"), ("/text", "FetchError"), ("/nothing", "FetchError")],
)
def test_http_errors_go_to_on_error(api: str, path: str, error: str) -> None:
    engine, turn = start(http_flow(api + path), fetch=fetch_json)
    done = engine.resume(turn.state, Input(digits="1"))
    assert done.state.path == ["ask", "lookup", "sorry", "bye"]
    assert said(done) == [f"確認できません ({error})"]
    assert done.state.outcome == {"kind": "hung-up"}


def test_a_slow_answer_beyond_the_nodes_timeout_goes_to_on_error(api: str) -> None:
    engine, turn = start(http_flow(api + "/slow"), fetch=fetch_json)
    began = time.monotonic()
    done = engine.resume(turn.state, Input(digits="1"))
    waited = time.monotonic() - began
    assert 0.4 < waited < 1.4, waited
    assert done.state.path[-2:] == ["sorry", "bye"]
    assert done.state.variables["http_error"] in {"ReadTimeout", "ConnectionError"}


def test_http_to_a_closed_port_goes_to_on_error() -> None:
    engine, turn = start(http_flow("http://127.0.0.1:9/x"), fetch=fetch_json)
    done = engine.resume(turn.state, Input(digits="1"))
    assert done.state.path[-2:] == ["sorry", "bye"]


# ---- queue, voicemail, transfer ----

END_FLOW = """\
start: pick
fallback:
  queue: support
nodes:
  pick:
    type: menu
    prompt: choose
    options: {"1": queue, "2": message, "3": phone, "4": sip, "5": short_message}
    on_failure: message
  queue:
    type: queue
    queue: billing
    priority: "len(caller) - 10"
    skills: {billing: 3, japanese: 2}
  message:
    type: voicemail
    prompt: 発信音のあとにどうぞ
    max_length: 60
    finish_on_key: "*"
    next: thanks
  short_message:
    type: voicemail
    max_length: 5
  thanks:
    type: hangup
    prompt: "録音しました {voicemail_seconds}秒"
  phone:
    type: transfer
    to: "+81312345678"
  sip:
    type: transfer
    to: "sip:agent@pbx.example.com;transport=tcp"
"""


def test_queue_with_an_expression_priority_and_skills() -> None:
    engine, turn = start(END_FLOW)
    done = engine.resume(turn.state, Input(digits="1"))
    assert done.actions == (Enqueue("billing", 3, {"billing": 3, "japanese": 2}),)
    assert done.state.outcome == {
        "kind": "queued",
        "queue": "billing",
        "priority": 3,
        "skills": {"billing": 3, "japanese": 2},
    }
    assert done.state.finished


def test_voicemail_records_then_goes_on_to_next() -> None:
    engine, turn = start(END_FLOW)
    record = engine.resume(turn.state, Input(digits="2"))
    assert record.actions == (Record((Say("発信音のあとにどうぞ", "ja"),), 60, "*"),)
    assert record.state.outcome is None
    assert record.state.node == "message"
    saved = engine.resume(record.state, Recorded("https://api.twilio.com/RE1", 17))
    assert saved.actions == (Say("録音しました 17秒", "ja"), Hangup())
    assert saved.state.variables["voicemail_url"] == "https://api.twilio.com/RE1"
    assert saved.state.outcome == {
        "kind": "voicemail",
        "recording": "https://api.twilio.com/RE1",
        "seconds": 17,
    }
    assert saved.state.path == ["pick", "message", "thanks"]


def test_voicemail_without_next_hangs_up_after_the_recording() -> None:
    engine, turn = start(END_FLOW)
    record = engine.resume(turn.state, Input(digits="5"))
    assert record.actions == (Record((), 5, "#"),)
    saved = engine.resume(record.state, Recorded("https://r.example/RE2", 3))
    assert saved.actions == (Hangup(),)
    assert saved.state.outcome == {
        "kind": "voicemail",
        "recording": "https://r.example/RE2",
        "seconds": 3,
    }


@pytest.mark.parametrize(
    ("key", "target"), [("3", "+81312345678"), ("4", "sip:agent@pbx.example.com;transport=tcp")]
)
def test_transfer_to_e164_and_sip(key: str, target: str) -> None:
    engine, turn = start(END_FLOW)
    done = engine.resume(turn.state, Input(digits=key))
    assert done.actions == (Transfer(target),)
    assert done.state.outcome == {"kind": "transferred", "to": target}


@pytest.mark.parametrize("target", ["0312345678", "+0123", "tel:+8131234", "+81 3 1234 5678"])
def test_a_transfer_target_that_is_neither_e164_nor_sip_is_refused(target: str) -> None:
    with pytest.raises(FlowInvalid, match=r"must be an E\.164 number"):
        parse_flow(f"start: t\nnodes:\n  t: {{type: transfer, to: '{target}'}}\n", "x.yaml")


def test_after_the_call_ended_any_event_just_hangs_up() -> None:
    engine, turn = start(END_FLOW)
    done = engine.resume(turn.state, Input(digits="1"))
    again = engine.resume(done.state, Input(digits="1"))
    assert again.actions == (Hangup(),)
    assert again.state.outcome == done.state.outcome


# ---- subflow and return ----

MAIN_WITH_SUBFLOW = """\
start: intro
nodes:
  intro:
    type: say
    text: はじめに
    next: verify
  verify:
    type: subflow
    flow: identify
    next: after
  after:
    type: say
    text: "確認しました {member}"
    next: bye
  bye:
    type: hangup
"""
IDENTIFY = """\
start: ask
nodes:
  ask:
    type: gather
    prompt: 会員番号をどうぞ
    into: member
    min_digits: 4
    max_digits: 4
    next: done
    on_failure: done
  done:
    type: return
"""


def test_subflow_runs_the_other_flow_and_returns_to_next() -> None:
    flows = DictFlows(main=MAIN_WITH_SUBFLOW, identify=IDENTIFY)
    engine = make_engine(flows)
    turn = engine.start("main", "CA1", CALLER, CALLED)
    assert said(turn) == ["はじめに", "会員番号をどうぞ"]
    assert (turn.state.flow, turn.state.node) == ("identify", "ask")
    assert [(f.flow, f.version, f.return_to) for f in turn.state.stack] == [("main", 1, "after")]
    assert turn.state.path == ["intro", "verify", "identify:ask"]

    # a new version of the subflow published mid-call does not change this call
    flows.add("identify", IDENTIFY.replace("会員番号をどうぞ", "新しい案内"))
    stored = CallState.from_json(json.loads(json.dumps(turn.state.to_json())))
    wrong = engine.resume(stored, Input(digits="12"))
    assert said(wrong) == ["会員番号をどうぞ"]

    back = engine.resume(wrong.state, Input(digits="1234"))
    assert said(back) == ["確認しました 1234"]
    assert back.actions[-1] == Hangup()
    assert (back.state.flow, back.state.version, back.state.stack) == ("main", 1, [])
    assert back.state.path == ["intro", "verify", "identify:ask", "identify:done", "after", "bye"]


def test_return_at_the_top_level_hangs_up() -> None:
    _, turn = start("start: r\nnodes:\n  r: {type: return}\n")
    assert turn.actions == (Hangup(),)
    assert turn.state.outcome == {"kind": "hung-up"}


# ---- never dead air ----

BROKEN = """\
start: pick
{fallback}
nodes:
  pick:
    type: menu
    prompt: choose
    options: {{"1": compute}}
    on_failure: compute
  compute:
    type: set
    vars: {{n: "int('not a number')"}}
    next: bye
  bye:
    type: hangup
"""


def test_a_runtime_error_gives_the_apology_and_the_fallback_queue() -> None:
    text = BROKEN.format(
        fallback="fallback: {queue: support, prompt: {ja: 失礼しました, en: Sorry}}"
    )
    engine, turn = start(text)
    done = engine.resume(turn.state, Input(digits="1"))
    assert done.actions == (Say("失礼しました", "ja"), Enqueue("support", 0, {}))
    assert done.state.outcome == {
        "kind": "queued",
        "queue": "support",
        "priority": 0,
        "skills": {},
        "fallback": True,
    }
    assert done.state.node is None


def test_without_a_fallback_queue_the_caller_leaves_a_voicemail() -> None:
    engine, turn = start(BROKEN.format(fallback="language: en"))
    done = engine.resume(turn.state, Input(digits="1"))
    assert done.actions == (
        Record(
            (Say(e.DEFAULT_APOLOGY["en"], "en"), Say(e.VOICEMAIL_INVITATION["en"], "en")),
            120,
            "#",
        ),
    )
    assert done.state.outcome == {"kind": "voicemail", "fallback": True}
    kept = engine.resume(done.state, Recorded("https://r.example/RE9", 8))
    assert kept.actions == (Hangup(),)
    assert kept.state.outcome == {
        "kind": "voicemail",
        "fallback": True,
        "recording": "https://r.example/RE9",
        "seconds": 8,
    }
    assert kept.state.variables["voicemail_url"] == "https://r.example/RE9"


def test_an_error_on_the_first_turn_also_gets_the_fallback() -> None:
    text = "start: x\nnodes:\n  x: {type: branch, rules: [{when: 'holiday(\"XX\")', next: x}], otherwise: x}\n"
    _, turn = start(text)
    assert turn.actions
    assert isinstance(turn.actions[-1], Record)
    assert turn.actions[-1].prompts[0] == Say(e.DEFAULT_APOLOGY["ja"], "ja")


def test_a_failing_clock_or_priority_gets_the_fallback_never_an_empty_turn() -> None:
    text = END_FLOW.replace('"len(caller) - 10"', '"int(caller[1:5]) / 0"')
    engine, turn = start(text)
    done = engine.resume(turn.state, Input(digits="1"))
    assert done.actions == (Say(e.DEFAULT_APOLOGY["ja"], "ja"), Enqueue("support", 0, {}))

    def broken_clock() -> dt.datetime:
        raise OSError("no clock")

    clockless = Engine(DictFlows(main=LANGUAGE_FLOW), Environment(broken_clock, no_fetch))
    turn = clockless.start("main", "CA1", CALLER, CALLED)
    done = clockless.resume(turn.state, Input(digits="1"))
    assert done.actions
    assert isinstance(done.actions[-1], Record)


def test_a_voicemail_node_given_keys_instead_of_a_recording_gets_the_fallback() -> None:
    engine, turn = start(END_FLOW)
    record = engine.resume(turn.state, Input(digits="2"))
    confused = engine.resume(record.state, Input(digits="1"))
    assert confused.actions[-1] == Enqueue("support", 0, {})


def test_a_runaway_loop_stops_at_max_hops_with_the_fallback() -> None:
    loop = """\
start: count
fallback: {{queue: support}}
nodes:
  count:
    type: set
    vars: {{n: "(n or 0) + 1"}}
    next: check
  check:
    type: branch
    rules:
      - when: n >= {limit}
        next: bye
    otherwise: count
  bye:
    type: hangup
"""
    _, fine = start(loop.format(limit=MAX_HOPS // 2 - 1))
    assert fine.actions == (Hangup(),)
    assert fine.state.variables["n"] == MAX_HOPS // 2 - 1

    began = time.monotonic()
    _, runaway = start(loop.format(limit=10**9))
    assert time.monotonic() - began < 2
    assert runaway.actions == (Say(e.DEFAULT_APOLOGY["ja"], "ja"), Enqueue("support", 0, {}))
    assert len(runaway.state.path) == MAX_HOPS


# ---- state ----


def test_call_state_survives_a_json_round_trip() -> None:
    flows = DictFlows(main=MAIN_WITH_SUBFLOW, identify=IDENTIFY)
    turn = make_engine(flows).start("main", "CA1", CALLER, CALLED)
    turn.state.variables.update({"名前": "山田", "vip": True, "n": 3, "ratio": 0.5, "none": None})
    text = json.dumps(turn.state.to_json(), ensure_ascii=False)
    again = CallState.from_json(json.loads(text))
    assert again == turn.state
    assert again.stack[0] == e.Frame("main", 1, "after")
    assert again.to_json() == turn.state.to_json()


def test_resume_never_mutates_the_state_it_is_given() -> None:
    flows = DictFlows(main=MAIN_WITH_SUBFLOW, identify=IDENTIFY)
    engine = make_engine(flows)
    turn = engine.start("main", "CA1", CALLER, CALLED)
    before = json.dumps(turn.state.to_json())
    for event in (Input(digits="1234"), Input(digits="1"), NoInput(), Recorded("u")):
        after = engine.resume(turn.state, event)
        assert after.state is not turn.state
        assert json.dumps(turn.state.to_json()) == before
    done = engine.resume(turn.state, Input(digits="1234"))
    assert done.state.stack == []
    assert turn.state.stack != []


def test_the_same_event_on_the_same_state_gives_the_same_turn() -> None:
    engine, turn = start(MENU_FLOW)
    first = engine.resume(turn.state, Input(digits="9"))
    second = engine.resume(turn.state, Input(digits="9"))
    assert first == second


def test_call_state_json_holds_every_field_as_asdict_would() -> None:
    import dataclasses

    from ivr.engine import CallState, Frame

    state = CallState(
        call_id="CA1",
        flow="main",
        version=3,
        caller="+819012345678",
        called="+81312345678",
        language="en",
        node="menu",
        step=4,
        attempts=1,
        variables={"order_id": "123456", "vip": True},
        path=["welcome", "menu"],
        stack=[Frame("main", 3, "after")],
        outcome={"kind": "queued", "queue": "billing"},
        survey="survey",
    )
    assert state.to_json() == dataclasses.asdict(state)
    assert CallState.from_json(state.to_json()) == state
