"""The client events of a realtime transcription session, checked before they touch the session: a frame that is
not a well-formed event of a known type, with fields of the right types and in range, raises EventError (the
client gets an `error` event and the session goes on)."""

from __future__ import annotations

import base64
import binascii
import json

MAX_FRAME = 1_500_000  # characters of a text frame: an append of 15 s of 24 kHz PCM16 in base64 is 960,000
RATES = (24000, 16000)
SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
VAD_RANGES = {"prefix_padding_ms": (0, 10_000), "silence_duration_ms": (0, 10_000)}
TYPES = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear")


class EventError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str = "invalid_event"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def parse(message: dict) -> dict:
    """An ASGI websocket.receive message as a client event of a known type; its event_id a string or None."""
    text = message.get("text")
    if text is None:
        raise EventError("binary frames are not events: send each event as JSON in a text frame.")
    if len(text) > MAX_FRAME:
        raise EventError(f"a frame holds at most {MAX_FRAME:,} characters: send audio in smaller appends.")
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise EventError("each message must be a JSON object with a type.")
    event["event_id"] = event["event_id"] if isinstance(event.get("event_id"), str) else None
    if event["type"] not in TYPES:
        raise EventError(f"unknown or unsupported event type {event['type'][:60]!r}.", "type")
    return event


def audio(event: dict, rate: int) -> bytes:
    """input_audio_buffer.append's audio: base64 PCM16, at most 15 s."""
    given = event.get("audio", "")
    try:
        if not isinstance(given, str):
            raise ValueError
        pcm = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        raise EventError("audio must be base64-encoded PCM16 (little-endian, mono).", "audio") from None
    if len(pcm) > 15 * rate * 2:
        raise EventError("send at most 15 s of audio per input_audio_buffer.append.", "audio")
    return pcm[: len(pcm) // 2 * 2]


def session_update(event: dict, rate: int, transcription: dict, turn_detection: dict | None) -> tuple:
    """session.update's changes to the session's (rate, transcription, turn_detection), checked."""
    session = _object(event, "session")
    if session.get("type", "transcription") != "transcription":
        raise EventError("asrflow serves transcription sessions only: session.type must be 'transcription'.", "session.type")
    given = _object(_object(session, "audio", "session."), "input", "session.audio.")
    audio_format = _object(given, "format", "session.audio.input.")
    rate = audio_format.get("rate", rate)
    if audio_format.get("type", "audio/pcm") != "audio/pcm" or not isinstance(rate, int) or rate not in RATES:
        raise EventError("audio.input.format must be {'type': 'audio/pcm', 'rate': 24000} (16000 is accepted too).",
                         "session.audio.input.format")
    changes = _object(given, "transcription", "session.audio.input.")
    for name in ("model", "language", "prompt"):
        if not isinstance(changes.get(name), (str, type(None))):
            raise EventError(f"transcription.{name} must be a string.", f"session.audio.input.transcription.{name}")
    transcription = {**transcription, **{k: v for k, v in changes.items() if k in ("model", "language", "prompt")}}
    if "turn_detection" in given:
        turn_detection = None if given["turn_detection"] is None else _server_vad(given["turn_detection"])
    return rate, transcription, turn_detection


def _server_vad(given) -> dict:
    wrong = EventError("turn_detection must be null or {'type': 'server_vad', 'threshold' between 0 and 1, "
                       "'prefix_padding_ms' and 'silence_duration_ms' between 0 and 10000}.", "session.audio.input.turn_detection")
    if not isinstance(given, dict):
        raise wrong
    detection = {**SERVER_VAD, **{k: v for k, v in given.items() if k in SERVER_VAD}}
    ranges = {"threshold": (0, 1), **VAD_RANGES}
    # numbers in range (NaN, infinities and 1e400 are not: every comparison with NaN is false), bools are not numbers
    if detection["type"] != "server_vad" or any(isinstance(detection[k], bool) or not isinstance(detection[k], (int, float))
                                                or not lo <= detection[k] <= hi for k, (lo, hi) in ranges.items()):
        raise wrong
    if detection["threshold"] in (0, 1):
        raise wrong
    return detection


def _object(container: dict, name: str, prefix: str = "") -> dict:
    value = container.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError(f"{prefix}{name} must be an object.", prefix + name)
    return value
