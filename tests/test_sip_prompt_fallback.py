"""A prompt file deleted after its flow was published: a real SIP call (`kokan sip`, sipp
as the caller) hears the flow's text for it spoken by espeak-ng, or the flow's apology
when it has none, and walks on through the flow instead of falling back or going silent.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import redis

from ivr.sip_prompts import PromptCache
from kokan.config import Settings
from kokan.db import Database
from tests.test_sip_calls import (
    RtpSink,
    Worker,
    ivr_state,
    place_call,
    publish_flow,
    rtp_sink,
    sip_settings,
    start_worker,
    the_call,
    wait_for,
)
from tests.test_sip_queue import heard_at

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

__all__ = ["place_call", "rtp_sink", "sip_settings", "start_worker"]  # fixtures, used by name

WELCOME = "Welcome to Kokan."
SORRY = "Sorry, one moment."
GONE_FLOW = f"""
start: welcome
language: en
fallback:
  prompt: {{en: "{SORRY}"}}
nodes:
  welcome:
    type: play
    file: prompts/welcome.wav
    text: {{en: "{WELCOME}"}}
    next: menu
  menu:
    type: menu
    prompt:
      - play: prompts/menu.wav
    options: {{"1": bye}}
    timeout: 1
    retries: 1
    on_failure: bye
  bye:
    type: hangup
"""


def test_a_prompt_file_deleted_after_publishing_is_spoken_and_the_call_walks_on(
    place_call: Callable[..., Worker],
    sip_settings: Settings,
    database: Database,
    redis_client: redis.Redis,
    rtp_sink: RtpSink,
) -> None:
    prompts = sip_settings.flows_dir / "prompts"
    for name in ("welcome.wav", "menu.wav"):
        shutil.copy(prompts / "hold.wav", prompts / name)
    publish_flow(database, sip_settings, GONE_FLOW)  # the check finds both files
    (prompts / "welcome.wav").unlink()
    (prompts / "menu.wav").unlink()

    worker = place_call(None, "kokan_hangs_up.xml")

    # the flow went on to its end, not into its fallback
    call, state = ivr_state(database, redis_client)
    assert state.path == ["welcome", "menu", "bye"]
    wait_for(
        lambda: the_call(database, redis_client).outcome == "completed-in-ivr", "the IVR outcome"
    )
    # the caller heard the text instead of the welcome file, then the apology instead of
    # the menu's (its one attempt)
    cache = PromptCache(sip_settings.resolved_data_dir, sip_settings.flows_dir)
    assert len(heard_at(cache.spoken(WELCOME, "en"), rtp_sink.packets)) == 1
    assert len(heard_at(cache.spoken(SORRY, "en"), rtp_sink.packets)) == 1
    output = worker.output()
    warned = [line for line in output.splitlines() if "WARNING ivr.prompt_fallback" in line]
    assert len(warned) == 2, output
    assert all(f"call={call.provider_call_id} " in line for line in warned), warned
    assert "prompts/welcome.wav is missing; saying its text instead" in warned[0]
    assert "prompts/menu.wav is missing and has no text; apologising" in warned[1]
    assert "hears the fallback" not in output, output
    assert "Traceback" not in output, output
