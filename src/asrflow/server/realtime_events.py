"""The client events of a realtime transcription session, checked before they touch the session: a frame that is
not a well-formed event of a known type, with fields of the right types and in range, raises EventError (the
client gets an `error` event and the session goes on), and so does audio that comes too fast (Pace)."""

from __future__ import annotations

import base64
import binascii
import json
import time

import av
import numpy as np

MAX_FRAME = 1_500_000  # characters of a text frame: an append of 15 s of 24 kHz PCM16 in base64 is 960,000
# audio formats and their rates: PCM16 at 24 kHz as OpenAI sends it (16 kHz too), G.711 at 8 kHz as telephony does
FORMATS = {"audio/pcm": (24000, 16000), "audio/pcmu": (8000,), "audio/pcma": (8000,)}
G711 = {"audio/pcmu": "pcm_mulaw", "audio/pcma": "pcm_alaw"}  # decoded by PyAV's (FFmpeg's) codecs
SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
# semantic_vad's eagerness as the silence (ms) that ends a turn: Silero finds the pauses, no model reads the meaning
EAGERNESS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}
RESPONSE_FIELDS = {"create_response", "interrupt_response"}  # a voice agent's: no responses in a transcription session
NOISE_REDUCTION = ("near_field", "far_field")
LOGPROBS = "item.input_audio_transcription.logprobs"  # include: each completed turn's word logprobs
VAD_RANGES = {"threshold": (0, 1), "prefix_padding_ms": (0, 10_000), "silence_duration_ms": (0, 10_000)}
IDLE_TIMEOUT = (1_000, 30_000)  # ms of audio with no speech after which server_vad commits the silence as a turn
MAX_TEXT = 2000  # characters of transcription's model, language and prompt (Whisper's prompt is 224 tokens at most)
BAD_AUDIO = "audio must be base64-encoded in the session's format (PCM16 little-endian mono, or G.711 bytes)."
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


def audio_seconds(event: dict, audio_format: dict) -> float:
    """input_audio_buffer.append's seconds of audio by the length of its base64 (4 characters carry 3 bytes),
    before it is decoded: at most 15 s."""
    given, width = event.get("audio", ""), 1 if audio_format["type"] in G711 else 2
    if not isinstance(given, str):
        raise EventError(BAD_AUDIO, "audio")
    if len(given) > -(-15 * audio_format["rate"] * width // 3) * 4:
        raise EventError("send at most 15 s of audio per input_audio_buffer.append.", "audio")
    return len(given) * 3 / 4 / width / audio_format["rate"]


def audio(event: dict, audio_format: dict, carried: bytes = b"") -> tuple[np.ndarray, bytes]:
    """input_audio_buffer.append's samples as PCM16 (audio_seconds checked its length first), and the byte left
    over: a PCM16 append of an odd length ends mid-sample, which the next append's first byte completes."""
    try:
        data = base64.b64decode(event.get("audio", ""), validate=True)
    except (binascii.Error, ValueError):
        raise EventError(BAD_AUDIO, "audio") from None
    if audio_format["type"] not in G711:
        data = carried + data
        return np.frombuffer(data[: len(data) // 2 * 2], "<i2"), data[len(data) // 2 * 2 :]
    codec = av.CodecContext.create(G711[audio_format["type"]], "r")
    codec.sample_rate, codec.layout = audio_format["rate"], "mono"
    frames = codec.decode(av.Packet(data)) if data else []
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames] or [np.zeros(0, np.int16)]), b""


def session_update(
    event: dict, audio_format: dict, transcription: dict, turn_detection: dict | None, include: list | None
) -> tuple:
    """session.update's changes to the session's (audio format, transcription, turn_detection, include), checked;
    a null field is one not sent, and a field the session does not take is an error naming it. noise_reduction is
    taken and not applied (session.updated says null)."""
    session = _object(event, "session")
    if session.get("type", "transcription") != "transcription":
        raise EventError(
            "asrflow serves transcription sessions only: session.type must be 'transcription'.", "session.type"
        )
    _known(session, {"type", "audio", "include", "object", "id"}, "session")
    if session.get("include") is not None:
        include = session["include"]
        if not isinstance(include, list) or not set(map(str, include)) <= {LOGPROBS}:
            raise EventError(
                f"include takes [{LOGPROBS!r}] (each completed turn's logprobs) or [], not {str(include)[:60]!r}.",
                "session.include",
            )
    given = _object(_object(session, "audio", "session."), "input", "session.audio.")
    _known(given, {"format", "noise_reduction", "transcription", "turn_detection"}, "session.audio.input")
    audio_format = _audio_format(_object(given, "format", "session.audio.input."), audio_format)
    _noise_reduction(_object(given, "noise_reduction", "session.audio.input."))
    changes = _object(given, "transcription", "session.audio.input.")
    _known(changes, {"model", "language", "prompt"}, "session.audio.input.transcription")
    for name in ("model", "language", "prompt"):
        if not isinstance(changes.get(name), (str, type(None))) or len(changes.get(name) or "") > MAX_TEXT:
            raise EventError(
                f"transcription.{name} must be a string of at most {MAX_TEXT} characters.",
                f"session.audio.input.transcription.{name}",
            )
    transcription = {**transcription, **{k: v for k, v in changes.items() if k in ("model", "language", "prompt")}}
    if "turn_detection" in given:
        turn_detection = None if given["turn_detection"] is None else _turn_detection(given["turn_detection"])
    return audio_format, transcription, turn_detection, include


def _known(given: dict, fields: set[str], where: str) -> None:
    """A field (not null) outside `fields` is named: taken silently, it would look applied."""
    if unknown := sorted(k for k, v in given.items() if k not in fields and v is not None):
        raise EventError(
            f"{where} has no field {unknown[0][:60]!r} here: it takes {', '.join(sorted(fields))}.",
            f"{where}.{unknown[0][:60]}",
        )


def _noise_reduction(given: dict) -> None:
    """OpenAI's noise_reduction (type near_field or far_field, a strength): taken, not applied."""
    _known(given, {"type", "strength"}, "session.audio.input.noise_reduction")
    kind, strength = given.get("type"), given.get("strength")
    if not (kind is None or isinstance(kind, str) and kind in NOISE_REDUCTION) or not (
        strength is None or _number(strength, 0, 1)
    ):
        raise EventError(
            "noise_reduction must be null or {'type': 'near_field' or 'far_field', 'strength': 0 to 1}.",
            "session.audio.input.noise_reduction",
        )


def _audio_format(given: dict, current: dict) -> dict:
    _known(given, {"type", "rate"}, "session.audio.input.format")
    kind = current["type"] if given.get("type") is None else given["type"]
    rates = FORMATS.get(kind) if isinstance(kind, str) else None
    rate = given.get("rate")
    if rate is None:  # the session's, or the format's first
        rate = current["rate"] if kind == current["type"] else rates[0] if rates else None
    if rates is None or isinstance(rate, bool) or not isinstance(rate, int) or rate not in rates:
        raise EventError(
            "audio.input.format must be {'type': 'audio/pcm', 'rate': 24000} (16000 is accepted too), or "
            "{'type': 'audio/pcmu'} or {'type': 'audio/pcma'} (G.711) at 8000.",
            "session.audio.input.format",
        )
    return {"type": kind, "rate": rate}


def _turn_detection(given) -> dict:
    """server_vad with its settings (idle_timeout_ms included: OpenAI's, for server_vad only), or semantic_vad with
    its eagerness as the silence that ends a turn; a field neither takes is named."""
    given = {k: v for k, v in given.items() if v is not None} if isinstance(given, dict) else given
    kind = given.get("type", "server_vad") if isinstance(given, dict) else None
    if kind == "semantic_vad":
        _known(given, {"type", "eagerness", *RESPONSE_FIELDS}, "session.audio.input.turn_detection")
        eagerness = given.get("eagerness", "auto")
        if not isinstance(eagerness, str) or eagerness not in EAGERNESS:
            raise EventError(
                "semantic_vad's eagerness must be low, medium, high or auto.",
                "session.audio.input.turn_detection.eagerness",
            )
        return {**SERVER_VAD, "type": kind, "eagerness": eagerness, "silence_duration_ms": EAGERNESS[eagerness]}
    if kind == "server_vad":
        _known(given, {*SERVER_VAD, "idle_timeout_ms", *RESPONSE_FIELDS}, "session.audio.input.turn_detection")
    detection = _server_vad(given)
    if (idle := given.get("idle_timeout_ms")) is not None:
        if not _number(idle, *IDLE_TIMEOUT) or idle != int(idle):
            raise EventError(
                f"idle_timeout_ms must be a whole number of milliseconds from {IDLE_TIMEOUT[0]} to {IDLE_TIMEOUT[1]}.",
                "session.audio.input.turn_detection.idle_timeout_ms",
            )
        detection["idle_timeout_ms"] = int(idle)
    return detection


def shown(detection: dict | None) -> dict | None:
    """turn_detection as session.updated shows it: semantic_vad as OpenAI's (its silence is the README's to say),
    so that a client may send it back as it is."""
    if detection and detection["type"] == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": detection["eagerness"]}
    return detection


def _server_vad(given) -> dict:
    detection = {**SERVER_VAD, **{k: v for k, v in given.items() if k in SERVER_VAD}} if isinstance(given, dict) else {}
    if (
        detection.get("type") != "server_vad"
        or detection["threshold"] in (0, 1)
        or not all(_number(detection[k], lo, hi) for k, (lo, hi) in VAD_RANGES.items())
    ):
        raise EventError(
            "turn_detection must be null, {'type': 'semantic_vad', 'eagerness': ...} or {'type': 'server_vad', "
            "'threshold' between 0 and 1, 'prefix_padding_ms' and 'silence_duration_ms' between 0 and 10000}.",
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
