"""A queue with `sip_agent_leg: refer`: the `kokan sip` worker holding a SIP caller hands
them to the agent the ACD chose with a REFER instead of bridging, so the caller's own
phone calls the agent and the worker's call slot is freed. Real peers on 127.0.0.1: a
baresip caller (which follows REFERs), a baresip agent, sipp as a busy agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from acd.sip_handoff import OWNER_KEY
from kokan.db import Database
from tests.sip_peers import Baresip, Peers, baresip_agents
from tests.test_sip_bridge import (
    CALLER_TONE_HZ,
    Floor,
    acd_events,
    busy_phone,
    heard_tone_frames,
    start_floor,
)
from tests.test_sip_calls import POLL_S, the_call, wait_for

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

__all__ = ["baresip_agents", "start_floor"]  # fixtures, used by name

REFER_QUEUE = {"sip_agent_leg": "refer"}
HEARD_FRAMES = 25
"""Half a second of the caller's tone at the agent: the caller's own call carries audio."""
WAV_HEADER = 44
FRAME_BYTES = 320
"""20 ms of 16-bit 8 kHz audio in the agent's phone's WAV of what it heard."""
REFERRED = "referred the caller to agent"
"""The worker's log line when it sends the REFER."""


def kokan_uri(floor: Floor) -> str:
    return f"sip:+81312345678@127.0.0.1:{floor.worker_port}"


def decoded_bytes(phone: Baresip) -> int:
    """How much the agent's phone has written of the audio it heard so far."""
    return sum(path.stat().st_size for path in phone.received())


def established_with(phone: Baresip) -> list[str]:
    """baresip's lines for each call it established, which name the other party."""
    return [line for line in phone.output().splitlines() if "Call established:" in line]


def test_a_refer_queue_hands_the_sip_caller_to_the_agents_phone(
    start_floor: Callable[..., Floor], baresip_agents: Peers, database: Database
) -> None:
    agent = baresip_agents.agent("aiko")
    floor = start_floor({"aiko": {"queues": ["billing"], "sip_uri": agent.uri}}, queue=REFER_QUEUE)
    caller = baresip_agents.caller("hana", kokan_uri(floor), CALLER_TONE_HZ)

    # the caller's phone, not Kokan, calls the agent; then they talk without Kokan
    calls_in = wait_for(lambda: established_with(agent), "the agent's call")
    assert len(calls_in) == 1, calls_in
    assert calls_in[0].endswith("sip:hana@127.0.0.1"), calls_in
    acd = floor.acd
    call = wait_for(
        lambda: (c := the_call(database, acd.redis)).ended_at is not None and c,
        "Kokan's leg to end after the transfer",
    )
    assert call.outcome == "transferred-to-agent"
    assert call.answered_at is not None
    assert call.queue == "billing"
    assert call.from_number == "hana"
    events = acd_events(acd, call.provider_call_id)
    kinds = [kind for kind, _ in events]
    assert ("answer", "aiko") in events, events
    assert ("end", "aiko") in events, events
    assert kinds.index("offer") < kinds.index("answer") < kinds.index("end"), kinds
    assert acd.agent("aiko").status == "wrap-up"
    assert not acd.redis.exists(acd.keys.prefix + OWNER_KEY.format(call=call.provider_call_id))

    # Kokan is gone from the call, and the caller's voice reaches the agent: the agent's
    # phone has kept twice the audio looked for when the caller hangs up
    wait_for(
        lambda: decoded_bytes(agent) >= WAV_HEADER + 2 * HEARD_FRAMES * FRAME_BYTES,
        "a second of the call at the agent's phone",
    )
    caller.stop()  # hangs up its call to the agent, whose phone then closes its files
    wait_for(lambda: "terminated" in agent.output(), "the agent's end of the call")
    heard = heard_tone_frames(agent)
    assert heard >= HEARD_FRAMES, f"the agent heard the caller's tone in {heard} frames"
    output = floor.output()
    assert REFERRED in output, output
    assert "bridged" not in output, output
    assert "Traceback" not in output, output


def test_a_failed_refer_puts_the_caller_back_in_line(
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    database: Database,
    tmp_path: Path,
) -> None:
    busy, port = busy_phone(tmp_path)
    try:
        floor = start_floor(
            {"ren": {"queues": ["billing"], "sip_uri": f"sip:ren@127.0.0.1:{port}"}},
            queue=REFER_QUEUE,
        )
        baresip_agents.caller("yui", kokan_uri(floor), CALLER_TONE_HZ)
        acd = floor.acd
        call_id = wait_for(
            lambda: (
                (c := the_call(database, acd.redis)).queued_at is not None and c.provider_call_id
            ),
            "the caller to queue",
        )
        # the agent's phone answers the caller's INVITE 486: the NOTIFY says so, the ACD
        # hears a no-answer, and the caller waits on (the only agent is now not-ready)
        wait_for(lambda: ("no-answer", "ren") in acd_events(acd, call_id), "the no-answer")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # still waiting a moment later, not hung up
            assert acd.call(call_id).state == "waiting", acd_events(acd, call_id)
            time.sleep(POLL_S)
        assert the_call(database, acd.redis).ended_at is None
        assert acd.agent("ren").status == "not-ready"
        output = floor.output()
        assert REFERRED in output, output
        assert "the REFER to agent ren failed" in output, output
        assert "Traceback" not in output, output
    finally:
        busy.kill()
        busy.wait()
