"""Recordings and voicemail: storage, conversion and transcription jobs, playback."""
