"""What can go wrong with a recording, split by what the fetch job must do about it.

RecordingUnusable: retrying cannot help (gone, refused, corrupt, too big), so the row is
marked failed with the message as its reason. FetchInterrupted: the next attempt may
succeed (network, Twilio's 5xx, a full disk), so the job raises and rq retries it.
"""

from __future__ import annotations

from kokan.errors import InvalidInput, KokanError, NotFound


class InvalidRecordingUrl(InvalidInput):
    error_id = "recording-url-invalid"


class InvalidStorageKey(KokanError):
    error_id = "recording-storage-key-invalid"
    status = 500


class RecordingNotFound(NotFound):
    error_id = "recording-not-found"


class RecordingUnusable(KokanError):
    """The recording cannot be fetched or kept, and asking again will not change that."""

    error_id = "recording-unusable"
    status = 422


class RecordingGone(RecordingUnusable):
    error_id = "recording-gone"


class TwilioCredentialsRefused(RecordingUnusable):
    error_id = "recording-twilio-credentials-refused"


class TwilioNotConfigured(RecordingUnusable):
    error_id = "recording-twilio-not-configured"


class RecordingTooLarge(RecordingUnusable):
    error_id = "recording-too-large"


class RecordingEmpty(RecordingUnusable):
    error_id = "recording-empty"


class RecordingCorrupt(RecordingUnusable):
    error_id = "recording-corrupt"


class FetchInterrupted(KokanError):
    """A failure the next attempt may not meet; raised so that rq retries the job."""

    error_id = "recording-fetch-interrupted"
    status = 503


class StorageFull(FetchInterrupted):
    """The disk is full: the provider keeps the original, and a retry after space is freed works."""

    error_id = "recording-storage-full"


class ProcessingInterrupted(FetchInterrupted):
    """Conversion or transcription stopped for a reason the next attempt may not meet."""

    error_id = "recording-processing-interrupted"


class ConverterMissing(ProcessingInterrupted):
    """No ffmpeg at all: an installation problem, retried in case it is being fixed."""

    error_id = "recording-converter-missing"


class RecordingForbidden(KokanError):
    error_id = "recording-forbidden"
    status = 403


class RecordingFileMissing(KokanError):
    """The row says stored but the file is gone (retention or an operator removed it)."""

    error_id = "recording-file-missing"
    status = 410
