"""One exception hierarchy: every message says what went wrong and what to do about it."""


class AsrflowError(Exception):
    """Base class of the errors asrflow raises for a person to read."""

    exit_code = 1
    http_status = 500


class AudioDecodeError(AsrflowError):
    """The input is not audio we can decode (empty, truncated, unsupported or not audio)."""

    exit_code = 2
    http_status = 400


class AudioTooLongError(AudioDecodeError):
    """The audio lasts longer than the limit set for this caller (a server's per-request limit)."""

    http_status = 413


class ModelNotFoundError(AsrflowError):
    """A model name or path that resolves to nothing usable."""

    exit_code = 3
    http_status = 404


class InvalidOptionError(AsrflowError):
    """A transcription option with a value we cannot use."""

    exit_code = 2
    http_status = 400
