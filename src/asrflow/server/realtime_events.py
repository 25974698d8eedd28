"""The client events of a realtime transcription session, checked before they touch the session: a frame that is
not a well-formed event of a known type, with fields of the right types and in range, raises EventError (the
client gets an `error` event and the session goes on), and so does audio that comes too fast (Pace)."""

from __future__ import annotations

import base64
import binascii
import json
import time

MAX_FRAME = 1_500_000  # characters of a text frame: an append of 15 s of 24 kHz PCM16 in base64 is 960,000
RATES = (24000, 16000)
SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
VAD_RANGES = {"threshold": (0, 1), "prefix_padding_ms": (0, 10_000), "silence_duration_ms": (0, 10_000)}
MAX_TEXT = 2000  # characters of transcription's model, language and prompt (Whisper's prompt is 224 tokens at most)
BAD_AUDIO = "audio must be base64-encoded PCM16 (little-endian, mono)."
TYPES = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear")


class EventError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def error_event(message: str, param: str | None = None, code: str | None = None, event_id=None) -> dict:
    return {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        },
    }


class Pace:
    """A token bucket in audio seconds: a session's audio may come BURST seconds at once, then SPEED times real time;
    an append beyond that is dropped."""

    SPEED, BURST = 2.0, 15.0

    def __init__(self):
        self.allowance, self.at = self.BURST, time.monotonic()

    def take(self, seconds: float) -> None:
        now = time.monotonic()
        self.allowance, self.at = min(self.BURST, self.allowance + (now - self.at) * self.SPEED), now
        if seconds > self.allowance:
            raise EventError(
                f"audio may come at most {self.SPEED:g} times faster than real time (after a burst of "
                f"{self.BURST:g} s): this append was dropped.",
                "audio",
                "rate_limited",
            )
        self.allowance -= seconds


def parse(message: dict) -> dict:
    """An ASGI websocket.receive message as a client event of a known type; its event_id a string or None."""
    text = message.get("text")
    if text is None:
        raise EventError("binary frames are not events: send each event as JSON in a text frame.", code="invalid_event")
    if len(text) > MAX_FRAME:
        raise EventError(
            f"a frame holds at most {MAX_FRAME:,} characters: send audio in smaller appends.", code="invalid_event"
        )
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise EventError("each message must be a JSON object with a type.", code="invalid_event")
    event["event_id"] = event["event_id"] if isinstance(event.get("event_id"), str) else None
    if event["type"] not in TYPES:
        raise EventError(f"unknown or unsupported event type {event['type'][:60]!r}.", "type", "invalid_event")
    return event


def audio_seconds(event: dict, rate: int) -> float:
    """input_audio_buffer.append's seconds of audio by the length of its base64 (4 characters carry 3 bytes),
    before it is decoded: at most 15 s."""
    given = event.get("audio", "")
    if not isinstance(given, str):
        raise EventError(BAD_AUDIO, "audio")
    if len(given) > -(-15 * rate * 2 // 3) * 4:
        raise EventError("send at most 15 s of audio per input_audio_buffer.append.", "audio")
    return len(given) * 3 / 4 / 2 / rate


def audio(event: dict) -> bytes:
    """input_audio_buffer.append's PCM16 (audio_seconds checked it first)."""
    try:
        pcm = base64.b64decode(event.get("audio", ""), validate=True)
    except (binascii.Error, ValueError):
        raise EventError(BAD_AUDIO, "audio") from None
    return pcm[: len(pcm) // 2 * 2]


def session_update(event: dict, rate: int, transcription: dict, turn_detection: dict | None) -> tuple:
    """session.update's changes to the session's (rate, transcription, turn_detection), checked."""
    session = _object(event, "session")
    if session.get("type", "transcription") != "transcription":
        raise EventError(
            "asrflow serves transcription sessions only: session.type must be 'transcription'.", "session.type"
        )
    given = _object(_object(session, "audio", "session."), "input", "session.audio.")
    audio_format = _object(given, "format", "session.audio.input.")
    rate = audio_format.get("rate", rate)
    if audio_format.get("type", "audio/pcm") != "audio/pcm" or not isinstance(rate, int) or rate not in RATES:
        raise EventError(
            "audio.input.format must be {'type': 'audio/pcm', 'rate': 24000} (16000 is accepted too).",
            "session.audio.input.format",
        )
    changes = _object(given, "transcription", "session.audio.input.")
    for name in ("model", "language", "prompt"):
        if not isinstance(changes.get(name), (str, type(None))) or len(changes.get(name) or "") > MAX_TEXT:
            raise EventError(
                f"transcription.{name} must be a string of at most {MAX_TEXT} characters.",
                f"session.audio.input.transcription.{name}",
            )
    transcription = {**transcription, **{k: v for k, v in changes.items() if k in ("model", "language", "prompt")}}
    if "turn_detection" in given:
        turn_detection = None if given["turn_detection"] is None else _server_vad(given["turn_detection"])
    return rate, transcription, turn_detection


def _server_vad(given) -> dict:
    detection = {**SERVER_VAD, **{k: v for k, v in given.items() if k in SERVER_VAD}} if isinstance(given, dict) else {}
    if (
        detection.get("type") != "server_vad"
        or detection["threshold"] in (0, 1)
        or not all(_number(detection[k], lo, hi) for k, (lo, hi) in VAD_RANGES.items())
    ):
        raise EventError(
            "turn_detection must be null or {'type': 'server_vad', 'threshold' between 0 and 1, "
            "'prefix_padding_ms' and 'silence_duration_ms' between 0 and 10000}.",
            "session.audio.input.turn_detection",
        )
    return detection


def _number(value, lo: float, hi: float) -> bool:
    """A number from lo to hi: not a bool, not NaN (every comparison with NaN is false), not infinite nor 1e400."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi


def _object(container: dict, name: str, prefix: str = "") -> dict:
    value = container.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError(f"{prefix}{name} must be an object.", prefix + name)
    return value
