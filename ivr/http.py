"""Audio prompts for Twilio to fetch: only audio files under the flows folder, nothing else."""

from __future__ import annotations

from pathlib import PurePosixPath

from flask import Blueprint, Response, abort, send_from_directory

from kokan.wiring import settings

blueprint = Blueprint("ivr_media", __name__)

AUDIO_SUFFIXES = {".wav", ".mp3", ".ogg"}
PROMPT_CACHE_S = 300
"""Twilio caches prompts; five minutes lets a re-published prompt take effect soon."""


@blueprint.get("/media/flows/<path:name>")
def prompt_file(name: str) -> Response:
    if PurePosixPath(name).suffix.lower() not in AUDIO_SUFFIXES:
        abort(404)
    return send_from_directory(
        settings().flows_dir.resolve(), name, max_age=PROMPT_CACHE_S, conditional=True
    )
