"""Recordings and voicemail: storage, conversion and transcription jobs, playback."""

import warnings

# pydub warns when it is imported without an ffmpeg on PATH; recording.ffmpeg gives it the
# one Kokan's dependencies ship, so the warning would only mislead.
warnings.filterwarnings("ignore", message="Couldn't find ffmpeg or avconv", category=RuntimeWarning)
