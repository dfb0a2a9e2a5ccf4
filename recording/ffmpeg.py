"""Which ffmpeg converts recordings: the one the `imageio-ffmpeg` wheel ships, else the system's.

The wheel's binary comes with Kokan's own dependencies, so a plain `pip install` converts
without any system package. It has no ffprobe, so every decode names its format and codec.
"""

from __future__ import annotations

import functools
import shutil

from pydub import AudioSegment

from recording.errors import ConverterMissing

__all__ = ["AudioSegment", "configure_pydub", "ffmpeg_path"]


@functools.cache
def ffmpeg_path() -> str:
    """The converter's path, found once per process."""
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]  # ships no type hints

        found: str | None = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
    if not found:
        raise ConverterMissing(
            "no ffmpeg: install Kokan's dependencies (imageio-ffmpeg) or the system's ffmpeg"
        )
    return found


def configure_pydub() -> None:
    """Point pydub at the converter; pydub keeps it as a class attribute, so once is enough."""
    AudioSegment.converter = ffmpeg_path()
