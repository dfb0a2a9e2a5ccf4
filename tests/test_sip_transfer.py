"""A flow's `transfer` node over SIP (ivr.sip_transfer): a REFER the caller's side refuses
becomes a bridge through Kokan, `sip.transfer: bridge` bridges without a REFER, a number
goes out through the configured trunk, and a number with no trunk (or a busy one) is the
flow's fallback, never silence. Real peers on 127.0.0.1: sipp as caller and as trunk,
baresip as the target's phone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from ivr.sip_transfer import target_uri
from kokan.config import Settings, SipSettings
from kokan.db import Database
from tests.sip_peers import TONE_HZ, Baresip, Peers, baresip_agents, write_tone
from tests.test_sip_bridge import (
    SPEAK_MAX_S,
    TONE_PACKETS,
    CallerEar,
    busy_phone,
    caller_ear,
    heard_tone_frames,
)
from tests.test_sip_calls import (
    Worker,
    publish_flow,
    sip_settings,
    start_speaking_caller,
    start_worker,
    the_call,
    wait_for,
)
from tickets.models import Call

__all__ = ["baresip_agents", "caller_ear", "sip_settings", "start_worker"]  # fixtures

NUMBER = "+81312345678"
TALK_MS = 4000
"""The caller hangs up this long after the REFER's refusal (or the answer): the target
answers on loopback within a second, and a second of each side's tone is looked for."""
APOLOGY_S = 2
"""The flow's fallback prompt in these tests: a tone the caller's ear can tell apart from
ringback (400 Hz) and speech, so hearing it proves the fallback played."""
APOLOGY_PACKETS = 25
"""Half a second of it: the fallback reached the caller, not a blip."""
REFUSED = "failed; Kokan bridges the call"


def publish_transfer(
    database: Database, settings: Settings, target: str, *, prompt: bool = False
) -> None:
    """The main flow: a transfer to `target` (after a short prompt), with a fallback prompt
    the caller's ear knows (a tone file)."""
    write_tone(settings.flows_dir / "prompts" / "sorry.wav", TONE_HZ, APOLOGY_S)
    said = "    prompt: {en: Transferring you.}\n" if prompt else ""
    source = f"""
start: out
language: en
fallback:
  prompt: {{play: prompts/sorry.wav}}
nodes:
  out:
    type: transfer
    to: "{target}"
{said}"""
    publish_flow(database, settings, source)


def speaking(ear: CallerEar) -> Callable[[int, Callable[[], bool]], None]:
    return lambda port, gone: ear.speak(port, SPEAK_MAX_S, until=gone)


def ended_call(database: Database, client: redis.Redis) -> Call:
    call: Call = wait_for(
        lambda: (c := the_call(database, client)).ended_at is not None and c, "the call's end"
    )
    return call


def check_bridged(
    worker: Worker,
    scenario: str,
    target: Baresip,
    ear: CallerEar,
    database: Database,
    client: redis.Redis,
    tmp_path: Path,
) -> str:
    """The caller talks to the target through Kokan both ways, then hangs up, which ends
    the target's leg too; the record says transferred. Returns the worker's log."""
    caller = start_speaking_caller(
        worker.port, ear, tmp_path, speaking(ear), scenario=scenario, hold_ms=TALK_MS
    )
    done = caller.finish()
    output = worker.output()
    assert done.returncode == 0, done.stdout.decode(errors="replace") + output
    tone = ear.tone_packets()
    assert tone >= TONE_PACKETS, f"the target's tone reached the caller in {tone} packets"
    wait_for(lambda: "terminated" in target.output(), "the target's leg to end")
    heard = heard_tone_frames(target)
    assert heard >= TONE_PACKETS, f"the target heard the caller's tone in {heard} frames"
    call = ended_call(database, client)
    assert call.outcome == "transferred"
    assert call.answered_at is None  # no agent: the ACD never saw the call
    output = worker.output()
    assert f"dialling the transfer's target {target.uri}" in output, output
    assert "Traceback" not in output, output
    return output


@pytest.mark.media
def test_a_caller_who_refuses_the_refer_is_bridged_to_the_target(
    start_worker: Callable[..., Worker],
    sip_settings: Settings,
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    target = baresip_agents.agent("ken")
    publish_transfer(database, sip_settings, target.uri, prompt=True)
    worker = start_worker()
    output = check_bridged(
        worker, "refuses_refer.xml", target, caller_ear, database, redis_client, tmp_path
    )
    assert f"referred the caller to {target.uri}" in output, output
    assert f"the REFER to {target.uri} {REFUSED}" in output, output


@pytest.mark.media
def test_the_bridge_mode_bridges_without_a_refer(
    start_worker: Callable[..., Worker],
    sip_settings: Settings,
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    target = baresip_agents.agent("mio")
    publish_transfer(database, sip_settings, target.uri)
    worker = start_worker(sip={"transfer": "bridge"})
    # call.xml expects no REFER: one would fail the caller's scenario
    output = check_bridged(worker, "call.xml", target, caller_ear, database, redis_client, tmp_path)
    assert "referred the caller" not in output, output


def fallback_heard(
    worker: Worker,
    ear: CallerEar,
    database: Database,
    client: redis.Redis,
    tmp_path: Path,
) -> tuple[Call, str]:
    """A caller who stays TALK_MS and hangs up hears the flow's fallback (its tone); the
    call's record says the transfer failed."""
    caller = start_speaking_caller(
        worker.port, ear, tmp_path, None, scenario="call.xml", hold_ms=TALK_MS
    )
    done = caller.finish()
    output = worker.output()
    assert done.returncode == 0, done.stdout.decode(errors="replace") + output
    heard = ear.tone_packets()
    assert heard >= APOLOGY_PACKETS, f"the caller heard the fallback in {heard} packets"
    call = ended_call(database, client)
    assert call.outcome == "failed"
    assert "Traceback" not in output, output
    return call, output


@pytest.mark.media
def test_a_number_goes_out_through_the_trunk_and_a_busy_one_is_the_fallback(
    start_worker: Callable[..., Worker],
    sip_settings: Settings,
    caller_ear: CallerEar,
    database: Database,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    trunk, port = busy_phone(tmp_path, "trunk_busy.xml")
    try:
        publish_transfer(database, sip_settings, NUMBER)
        worker = start_worker(sip={"trunk": f"sip:127.0.0.1:{port}", "transfer": "bridge"})
        _call, output = fallback_heard(worker, caller_ear, database, redis_client, tmp_path)
        # the trunk's scenario fails unless the INVITE asked for the number on the trunk
        assert trunk.wait(10) == 0, "the trunk got no INVITE for the number: " + output
    finally:
        if trunk.poll() is None:
            trunk.kill()
            trunk.wait()
    assert f"dialling the transfer's target sip:{NUMBER}@127.0.0.1:{port}" in output, output
    assert "was not reached (sip-transfer-not-reached)" in output, output


@pytest.mark.media
def test_a_number_without_a_trunk_is_the_fallback_logged_with_the_call(
    start_worker: Callable[..., Worker],
    sip_settings: Settings,
    caller_ear: CallerEar,
    database: Database,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    publish_transfer(database, sip_settings, NUMBER)
    worker = start_worker()
    call, output = fallback_heard(worker, caller_ear, database, redis_client, tmp_path)
    errors = [line for line in output.splitlines() if f"cannot transfer to {NUMBER}" in line]
    assert len(errors) == 1, output
    assert " ERROR " in errors[0], errors
    assert f"call={call.provider_call_id}" in errors[0], errors
    assert "sip-transfer-no-trunk" in errors[0], errors


@pytest.mark.parametrize(
    ("trunk", "uri"),
    [
        ("gw.example.com", f"sip:{NUMBER}@gw.example.com"),
        ("sip:gw.example.com:5060", f"sip:{NUMBER}@gw.example.com:5060"),
        ("10.0.0.7:5080;transport=tcp", f"sip:{NUMBER}@10.0.0.7:5080;transport=tcp"),
        ("sips:[2001:db8::1]:5061", f"sips:{NUMBER}@[2001:db8::1]:5061"),
    ],
)
def test_a_number_becomes_a_uri_on_the_trunk(trunk: str, uri: str) -> None:
    settings = SipSettings(trunk=trunk)
    assert target_uri(NUMBER, settings.trunk) == uri
    assert target_uri("sip:desk@pbx.example.com", settings.trunk) == "sip:desk@pbx.example.com"


def test_without_a_trunk_a_number_has_no_uri() -> None:
    assert SipSettings(trunk="  ").trunk is None
    assert target_uri(NUMBER, None) is None


@pytest.mark.parametrize(
    ("trunk", "why"),
    [
        ("sip:+8150@gw.example.com", "without a user part"),
        ("gw.example.com:70000", "port 70000 is outside"),
        ("http://gw.example.com", "not a trunk address"),
    ],
)
def test_a_bad_trunk_is_refused_with_a_reason(trunk: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        SipSettings(trunk=trunk)


def test_the_transfer_mode_is_refer_or_bridge() -> None:
    assert SipSettings().transfer == "refer"
    with pytest.raises(ValidationError, match="transfer"):
        SipSettings.model_validate({"transfer": "dial"})
