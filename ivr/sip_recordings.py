"""Recordings of bridged SIP calls: the caller on the left channel, the agent on the right.

pjsua's recorder writes mono, so the worker records each leg into a file of its own from
the moment the two are bridged (both start on the same loop turn, so the files line up at
their starts); when the bridge ends, the two become one stereo WAV here, on the worker's
side thread (never the loop that carries the calls' audio), which is handed to the
recording pipeline like a SIP voicemail, as a call recording with its agent and queue.

A pause (the recordings API, or a flow's `recording` node) stops both recorders; the
resume starts a new pair of files on one loop turn. The stereo WAV is the pairs joined
end to end, each pair made two-channel first (so the legs stay lined up), and the paused
span is not in it at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from kokan import logs
from kokan.config import Settings
from kokan.db import Database
from recording.errors import RecordingEmpty
from recording.ffmpeg import AudioSegment, configure_pydub
from recording.models import RecordingKind
from recording.services import fetch_retry, recorded_locally, recordings_queue
from recording.storage import LocalStorage

CALLER_SUFFIX = "-caller"
AGENT_SUFFIX = "-agent"
CALL_SUFFIX = "-call"
"""Names beside the call id: each leg's mono file while recording, then the stereo one
(also the recording's id with the provider, so a second hand-over stores nothing twice)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BridgedRecording:
    """One bridged call's two mono recordings, finished (their WAV headers written)."""

    call_id: str
    caller: Path
    agent: Path
    agent_id: str
    queue: str
    earlier: tuple[tuple[Path, Path], ...] = ()
    """The (caller, agent) files recorded before each pause, oldest first."""
    paused: bool = False
    """Both recorders are stopped until a resume starts the next pair."""

    @property
    def stereo(self) -> Path:
        return self.caller.with_name(self.call_id + CALL_SUFFIX + ".wav")

    @property
    def segments(self) -> tuple[tuple[Path, Path], ...]:
        return (*self.earlier, (self.caller, self.agent))


def leg_files(folder: Path, call_id: str, segment: int = 0) -> tuple[Path, Path]:
    """Where a bridged call's caller and agent legs are recorded while it lasts (after the
    n-th resume, files of their own)."""
    part = f"-{segment}" if segment else ""
    return (
        folder / f"{call_id}{CALLER_SUFFIX}{part}.wav",
        folder / f"{call_id}{AGENT_SUFFIX}{part}.wav",
    )


def _pair(caller: Path, agent: Path) -> AudioSegment:
    """Caller left, agent right, as long as the longer leg (the shorter ends in silence)."""
    left = AudioSegment.from_file(str(caller), format="wav")
    right = AudioSegment.from_file(str(agent), format="wav").set_frame_rate(left.frame_rate)
    longest = max(len(left), len(right))
    left += AudioSegment.silent(longest - len(left), frame_rate=left.frame_rate)
    right += AudioSegment.silent(longest - len(right), frame_rate=left.frame_rate)
    # pydub's ms-based padding can leave a frame or two between them: cut both to the same
    frames = min(int(left.frame_count()), int(right.frame_count()))
    left = left.get_sample_slice(0, frames).set_sample_width(2)
    right = right.get_sample_slice(0, frames).set_sample_width(2)
    return AudioSegment.from_mono_audiosegments(left, right)


def two_channel(caller: Path, agent: Path, target: Path) -> None:
    """Caller left, agent right, as long as the longer leg (the shorter ends in silence)."""
    joined_two_channel([(caller, agent)], target)


def joined_two_channel(segments: Sequence[tuple[Path, Path]], target: Path) -> None:
    """Each (caller, agent) pair made two-channel, the pairs joined end to end: what was
    recorded between pauses, with nothing of the paused spans."""
    configure_pydub()
    stereo: AudioSegment | None = None
    for caller, agent in segments:
        pair = _pair(caller, agent)
        stereo = pair if stereo is None else stereo + pair.set_frame_rate(stereo.frame_rate)
    if stereo is None:
        raise ValueError("no recorded segment to join")
    stereo.export(str(target), format="wav")


def keep_bridged_recording(
    settings: Settings, database: Database, client: redis.Redis, recorded: BridgedRecording
) -> None:
    """Make the stereo file and hand it to the recording pipeline; the legs' files go.
    Never raises (it runs on a side thread): a failure is logged with the call's id and
    the files stay where they are for an operator."""
    token = logs.call_id_var.set(recorded.call_id)
    try:
        joined_two_channel(recorded.segments, recorded.stereo)
        recording = settings.recording
        recorded_locally(
            database,
            recordings_queue(client) if recording.post_process else None,
            LocalStorage(settings.recordings_dir),
            provider_call_id=recorded.call_id,
            recording_id=recorded.stereo.stem,
            path=recorded.stereo,
            retry=fetch_retry(recording.fetch_retry_intervals_s),
            kind=RecordingKind.CALL,
            agent_id=recorded.agent_id,
            queue=recorded.queue,
        )
        for pair in recorded.segments:
            for path in pair:
                path.unlink(missing_ok=True)
    except RecordingEmpty:
        # the bridge ended within a packet (a hang-up at the answer): nothing to keep
        log.info("the call's recording holds no audio; not kept")
        for path in (*(p for pair in recorded.segments for p in pair), recorded.stereo):
            path.unlink(missing_ok=True)
    except Exception:
        log.exception(
            "could not keep the call's recording; its files stay in %s", recorded.caller.parent
        )
    finally:
        logs.call_id_var.reset(token)
