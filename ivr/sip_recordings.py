"""Recordings of bridged SIP calls: the caller on the left channel, the agent on the right.

pjsua's recorder writes mono, so the worker records each leg into a file of its own from
the moment the two are bridged (both start on the same loop turn, so the files line up at
their starts); when the bridge ends, the two become one stereo WAV here, on the worker's
side thread (never the loop that carries the calls' audio), which is handed to the
recording pipeline like a SIP voicemail, as a call recording with its agent and queue.
"""

from __future__ import annotations

import logging
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

    @property
    def stereo(self) -> Path:
        return self.caller.with_name(self.call_id + CALL_SUFFIX + ".wav")


def leg_files(folder: Path, call_id: str) -> tuple[Path, Path]:
    """Where a bridged call's caller and agent legs are recorded while it lasts."""
    return (
        folder / f"{call_id}{CALLER_SUFFIX}.wav",
        folder / f"{call_id}{AGENT_SUFFIX}.wav",
    )


def two_channel(caller: Path, agent: Path, target: Path) -> None:
    """Caller left, agent right, as long as the longer leg (the shorter ends in silence)."""
    configure_pydub()
    left = AudioSegment.from_file(str(caller), format="wav")
    right = AudioSegment.from_file(str(agent), format="wav").set_frame_rate(left.frame_rate)
    longest = max(len(left), len(right))
    left += AudioSegment.silent(longest - len(left), frame_rate=left.frame_rate)
    right += AudioSegment.silent(longest - len(right), frame_rate=left.frame_rate)
    # pydub's ms-based padding can leave a frame or two between them: cut both to the same
    frames = min(int(left.frame_count()), int(right.frame_count()))
    left = left.get_sample_slice(0, frames).set_sample_width(2)
    right = right.get_sample_slice(0, frames).set_sample_width(2)
    AudioSegment.from_mono_audiosegments(left, right).export(str(target), format="wav")


def keep_bridged_recording(
    settings: Settings, database: Database, client: redis.Redis, recorded: BridgedRecording
) -> None:
    """Make the stereo file and hand it to the recording pipeline; the legs' files go.
    Never raises (it runs on a side thread): a failure is logged with the call's id and
    the files stay where they are for an operator."""
    token = logs.call_id_var.set(recorded.call_id)
    try:
        two_channel(recorded.caller, recorded.agent, recorded.stereo)
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
        recorded.caller.unlink(missing_ok=True)
        recorded.agent.unlink(missing_ok=True)
    except RecordingEmpty:
        # the bridge ended within a packet (a hang-up at the answer): nothing to keep
        log.info("the call's recording holds no audio; not kept")
        for path in (recorded.caller, recorded.agent, recorded.stereo):
            path.unlink(missing_ok=True)
    except Exception:
        log.exception(
            "could not keep the call's recording; its files stay in %s", recorded.caller.parent
        )
    finally:
        logs.call_id_var.reset(token)
