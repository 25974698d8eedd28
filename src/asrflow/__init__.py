"""asrflow: Whisper speech recognition managed end to end with MLflow."""

from asrflow.audio import decode_audio
from asrflow.errors import AsrflowError, AudioDecodeError, InvalidOptionError, ModelNotFoundError
from asrflow.options import TranscribeOptions
from asrflow.process import configure_process
from asrflow.transcriber import Transcriber, load_transcriber
from asrflow.transcript import Segment, Transcript, Word

__version__ = "0.1.0"

__all__ = [
    "AsrflowError",
    "AudioDecodeError",
    "InvalidOptionError",
    "ModelNotFoundError",
    "Segment",
    "TranscribeOptions",
    "Transcriber",
    "Transcript",
    "Word",
    "configure_process",
    "decode_audio",
    "load_transcriber",
]
