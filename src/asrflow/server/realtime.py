"""OpenAI's Realtime API, transcription sessions: /v1/realtime?intent=transcription over WebSocket.

Client events: session.update, input_audio_buffer.append (base64 PCM16 mono, 24 kHz as OpenAI sends or 16 kHz),
input_audio_buffer.commit and .clear. Server events: session.created/.updated, input_audio_buffer.speech_started,
.speech_stopped, .committed, .cleared, conversation.item.input_audio_transcription.delta (words settled while the
turn is spoken, live.Agreement) and .completed (the turn's final text), error. Turns are found by server_vad
(live.TurnDetector) or committed by the client (turn_detection null). Every transcription goes through the
server's scheduler, in turns with the file requests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import json
import time

import av
import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from asrflow.audio import SAMPLE_RATE
from asrflow.errors import AsrflowError
from asrflow.live import Agreement, TurnDetector
from asrflow.server.errors import HTTPError

router = APIRouter()
RATES = (24000, 16000)
PARTIAL_EVERY = 0.2  # seconds of new speech between hypotheses of the turn being spoken
FIRST_PARTIAL = 0.5  # seconds of turn (prefix padding included) before its first hypothesis
PAUSING = 0.2  # seconds of silence after which no new hypothesis starts: the turn may be ending, its final comes first
MAX_TURN = 30.0  # a turn longer than Whisper's window is committed as it stands
MAX_BUFFER = 600.0  # audio held uncommitted with turn_detection null
SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(ids):012d}"


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket):
    config = websocket.app.state.config
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    # browsers cannot set headers: OpenAI's subprotocol "openai-insecure-api-key.KEY" carries the key instead
    key = websocket.headers.get("authorization", "").removeprefix("Bearer ").strip() or next(
        (p.removeprefix("openai-insecure-api-key.") for p in offered if p.startswith("openai-insecure-api-key.")), "")
    if config.api_key and not hmac.compare_digest(key.encode(), config.api_key.encode()):
        await websocket.close(code=1008, reason="missing or wrong API key")
        return
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    session = LiveSession(websocket, websocket.app.state.holder, config.max_audio_minutes * 60, config.realtime_idle_s)
    try:
        await session.use_model(None)
    except HTTPError as e:
        await session.error(e.message, "model", "model_not_ready")
        await websocket.close(code=1011)
        return
    if websocket.query_params.get("intent", "transcription") != "transcription":
        await session.error("asrflow serves transcription sessions only: connect with ?intent=transcription.", "intent")
        await websocket.close(code=1008)
        return
    await session.run()


class LiveSession:
    def __init__(self, websocket: WebSocket, holder, max_seconds: float, idle: float = 60.0):
        self.websocket, self.holder, self.max_samples, self.idle = websocket, holder, int(max_seconds * SAMPLE_RATE), idle
        self.id, self.sending, self.order = new_id("sess"), asyncio.Lock(), asyncio.Lock()
        self.transcription = {"model": "whisper-1", "language": None, "prompt": ""}
        self.rate, self.turn_detection = 24000, dict(SERVER_VAD)
        self.served, self.options = None, None  # the session's model and options (use_model)
        self._reset_audio()
        self.item, self.previous_item, self.received = None, None, 0
        self.tasks: set[asyncio.Task] = set()

    async def use_model(self, requested: str | None) -> None:
        """The model the session's transcription names (any the server serves; whisper-1: its default)."""
        self.served = await self.holder.model(requested)
        self.options = self.served.transcriber.resolve({})

    def _reset_audio(self) -> None:
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        detection = self.turn_detection
        self.detector = TurnDetector(detection["threshold"], detection["prefix_padding_ms"],
                                     detection["silence_duration_ms"]) if detection else None
        self.buffer, self.offset, self.turn_start = np.zeros(0, np.float32), 0, None  # offset: buffer[0]'s sample
        self.agreement, self.hypothesis_at, self.partial = Agreement(), 0, None

    def describe(self) -> dict:
        return {"object": "realtime.transcription_session", "id": self.id, "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.rate}, "noise_reduction": None,
                                    "transcription": self.transcription, "turn_detection": self.turn_detection}},
                "include": None}

    async def send(self, event: dict) -> None:
        async with self.sending:
            await self.websocket.send_text(json.dumps({"event_id": new_id("event"), **event}))

    async def error(self, message: str, param: str | None = None, code: str | None = None, event_id=None) -> None:
        await self.send({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message,
                                                     "param": param, "event_id": event_id}})

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": self.describe()})
        try:
            while True:
                try:
                    text = await asyncio.wait_for(self.websocket.receive_text(), self.idle)
                except asyncio.TimeoutError:
                    await self.error(f"no event for {self.idle:g} s: the session is closed.", code="idle_timeout")
                    await self.websocket.close(code=1000)
                    return
                if not await self.handle(text):
                    await self.websocket.close(code=1008)
                    return
        except WebSocketDisconnect:
            pass
        finally:
            for task in self.tasks:
                task.cancel()

    async def handle(self, text: str) -> bool:
        """One client event; False ends the session (its audio limit reached)."""
        try:
            event = json.loads(text)
            kind = event["type"] if isinstance(event, dict) else None
        except (ValueError, KeyError):
            await self.error("each message must be a JSON event with a type.", code="invalid_event")
            return True
        handler = {"session.update": self.update, "input_audio_buffer.append": self.append,
                   "input_audio_buffer.commit": self.commit, "input_audio_buffer.clear": self.clear}.get(kind)
        if handler is None:
            await self.error(f"unknown or unsupported event type {str(kind)[:60]!r}.", "type", "invalid_event", event.get("event_id"))
            return True
        try:
            return await handler(event) is not False
        except (HTTPError, AsrflowError, ValueError, TypeError, KeyError, AttributeError) as e:
            await self.error(getattr(e, "message", None) or str(e), code="invalid_value", event_id=event.get("event_id"))
            return True

    async def update(self, event: dict) -> None:
        session = event.get("session") or {}
        if session.get("type", "transcription") != "transcription":
            raise ValueError("asrflow serves transcription sessions only: session.type must be 'transcription'.")
        given = (session.get("audio") or {}).get("input") or {}
        rate = (given.get("format") or {}).get("rate", self.rate)
        if (given.get("format") or {}).get("type", "audio/pcm") != "audio/pcm" or rate not in RATES:
            raise ValueError("audio.input.format must be {'type': 'audio/pcm', 'rate': 24000} (16000 is accepted too).")
        transcription = {**self.transcription, **(given.get("transcription") or {})}
        served = await self.holder.model(transcription.get("model")) if "model" in (given.get("transcription") or {}) else self.served
        options = served.transcriber.resolve({"language": transcription.get("language") or None,
                                              "initial_prompt": transcription.get("prompt") or None})
        detection = self.turn_detection
        if "turn_detection" in given:
            detection = None if given["turn_detection"] is None else {**SERVER_VAD, **given["turn_detection"]}
            if detection and (detection["type"] != "server_vad" or not 0 < float(detection["threshold"]) < 1):
                raise ValueError("turn_detection must be null or {'type': 'server_vad', 'threshold' between 0 and 1, ...}.")
        self.rate, self.transcription, self.options, self.turn_detection = rate, transcription, options, detection
        self.served = served
        self._reset_audio()
        await self.send({"type": "session.updated", "session": self.describe()})

    async def append(self, event: dict) -> bool:
        try:
            pcm = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("audio must be base64-encoded PCM16 (little-endian, mono).") from None
        if len(pcm) > 15 * self.rate * 2:
            raise ValueError("send at most 15 s of audio per input_audio_buffer.append.")
        samples = self._resample(np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2"))
        self.received += len(samples)
        if self.received > self.max_samples:
            await self.error(f"the session passed this server's limit of {self.max_samples / SAMPLE_RATE / 60:g} minutes "
                             "of audio: open a new one.", code="session_limit")
            return False
        self.buffer = np.concatenate([self.buffer, samples])
        if self.detector is None:
            if len(self.buffer) > MAX_BUFFER * SAMPLE_RATE:
                self.buffer = self.buffer[: int(MAX_BUFFER * SAMPLE_RATE)]
                raise ValueError(f"the buffer holds {MAX_BUFFER:g} s: commit it (input_audio_buffer.commit).")
            return True
        for kind, at in self.detector.feed(samples):
            await (self.started(at) if kind == "started" else self.stopped(at))
        if self.turn_start is None:  # between turns: keep what prefix padding may need
            keep = min(len(self.buffer), SAMPLE_RATE)
            self.offset, self.buffer = self.offset + len(self.buffer) - keep, self.buffer[-keep:]
        elif (self.offset + len(self.buffer) - self.turn_start) / SAMPLE_RATE > MAX_TURN:
            end = self.offset + len(self.buffer)
            await self.stopped(end)  # committed as it stands; the speech goes on in a new turn
            await self.started(end)
        else:
            self.maybe_hypothesis()
        return True

    def _resample(self, pcm: np.ndarray) -> np.ndarray:
        if not len(pcm):
            return np.zeros(0, np.float32)
        if self.rate == SAMPLE_RATE:
            return pcm.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(pcm[np.newaxis, :].copy(), format="s16", layout="mono")
        frame.sample_rate = self.rate
        return np.concatenate([f.to_ndarray().reshape(-1) for f in self.resampler.resample(frame)] or [np.zeros(0, np.float32)])

    async def started(self, at: int) -> None:
        self.turn_start, self.item = max(at, self.offset), new_id("item")
        self.agreement = Agreement()
        self.hypothesis_at = self.turn_start + int((FIRST_PARTIAL - PARTIAL_EVERY) * SAMPLE_RATE)
        await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": at * 1000 // SAMPLE_RATE,
                         "item_id": self.item})

    async def stopped(self, at: int) -> None:
        if self.turn_start is None:
            return
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": at * 1000 // SAMPLE_RATE,
                         "item_id": self.item})
        end = min(at + SAMPLE_RATE // 5, self.offset + len(self.buffer))  # a little after the last speech
        turn = self.buffer[self.turn_start - self.offset : end - self.offset].copy()
        self.offset, self.buffer = end, self.buffer[end - self.offset :]
        await self.committed(turn)
        self.turn_start = None

    async def commit(self, event: dict) -> None:
        if self.detector is not None and self.turn_start is None or not len(self.buffer):
            raise ValueError("the buffer holds no speech to commit.")
        if self.detector is not None:
            return await self.stopped(self.offset + len(self.buffer))
        self.item = new_id("item")
        turn, self.buffer = self.buffer, np.zeros(0, np.float32)
        await self.committed(turn)

    async def clear(self, event: dict) -> None:
        self._reset_audio()
        await self.send({"type": "input_audio_buffer.cleared"})

    async def committed(self, turn: np.ndarray) -> None:
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": self.previous_item, "item_id": self.item})
        self.previous_item = self.item
        self._spawn(self.complete(self.item, turn, self.agreement, self.partial))

    def maybe_hypothesis(self) -> None:
        """While a turn is spoken: a new hypothesis every PARTIAL_EVERY seconds, one at a time, and only while the
        model has nothing else queued (hypotheses are a courtesy; completed turns and file requests come first)."""
        end = self.offset + len(self.buffer)
        idle = self.holder.ready().depth() == 0
        pausing = self.detector is not None and end - self.detector.last_speech > PAUSING * SAMPLE_RATE
        if idle and not pausing and (self.partial is None or self.partial.done()) and end - self.hypothesis_at >= PARTIAL_EVERY * SAMPLE_RATE:
            self.hypothesis_at = end
            turn = self.buffer[self.turn_start - self.offset :].copy()
            self.partial = self._spawn(self.hypothesise(self.item, turn, self.agreement))

    async def hypothesise(self, item: str, turn: np.ndarray, agreement: Agreement) -> None:
        words = (await self.transcribe(turn, draft=True)).split()
        if new := agreement.update(words):
            await self.delta(item, agreement, new)

    async def complete(self, item: str, turn: np.ndarray, agreement: Agreement, partial) -> None:
        async with self.order:  # turns complete in the order they were committed
            if partial is not None:
                await asyncio.gather(partial, return_exceptions=True)
            started = time.perf_counter()
            try:
                text = await self.transcribe(turn) if len(turn) else ""
            except (HTTPError, AsrflowError) as e:
                return await self.error(f"could not transcribe {item}: {getattr(e, 'message', None) or e}", code="transcription_failed")
            if rest := agreement.rest(text.split()):
                agreement.confirmed += rest
                await self.delta(item, agreement, rest)
            await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                             "content_index": 0, "transcript": text,
                             "usage": {"type": "duration", "seconds": round(len(turn) / SAMPLE_RATE, 3)},
                             "asrflow": {"seconds": round(time.perf_counter() - started, 3), "model": self.served.name}})

    async def delta(self, item: str, agreement: Agreement, words: list[str]) -> None:
        first = len(agreement.confirmed) == len(words)
        await self.send({"type": "conversation.item.input_audio_transcription.delta", "item_id": item,
                         "content_index": 0, "delta": ("" if first else " ") + " ".join(words)})

    async def transcribe(self, samples: np.ndarray, draft: bool = False) -> str:
        """Through the scheduler; hypotheses of a turn still spoken are drafts (Transcriber.draft: quick, greedy,
        on the turn's length instead of a 30 s window), the final text is a full transcription."""
        job = self.holder.ready().submit(self.served.transcriber, samples, self.options, draft=draft)
        result = await asyncio.wrap_future(job.future)
        return result if draft else result.text

    def _spawn(self, work) -> asyncio.Task:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
