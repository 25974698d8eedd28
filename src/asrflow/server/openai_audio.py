"""OpenAI's audio API: /v1/audio/transcriptions and /translations, with server-sent events when streaming."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from asrflow.errors import AsrflowError
from asrflow.options import TranscribeOptions, flag
from asrflow.server import schema
from asrflow.server.errors import HTTPError, http_error
from asrflow.server.holder import ModelHolder, Reservation, holder
from asrflow.server.logprobs import check_word_probabilities, logprobs_of
from asrflow.server.openai_form import FORMATS, decoded_speakers, form_options, known_speakers, read_form
from asrflow.server.pool import Served
from asrflow.transcript import Segment, Transcript
from asrflow.writers import WRITERS

AUDIO_EXTENSIONS = {
    "flac",
    "mp3",
    "mp4",
    "mpeg",
    "mpga",
    "m4a",
    "ogg",
    "oga",
    "opus",
    "wav",
    "webm",
    "aac",
    "mka",
    "mkv",
    "w64",
}  # OpenAI's, and the other containers audio.DEMUXERS opens
router = APIRouter()
Holder = Annotated[ModelHolder, Depends(holder)]


@router.post("/v1/audio/transcriptions", openapi_extra=schema.audio_form(), responses=schema.audio_responses())
async def transcriptions(request: Request, model: Holder):
    return await openai_audio(request, model, "transcribe")


@router.post("/v1/audio/translations", openapi_extra=schema.audio_form(), responses=schema.audio_responses())
async def translations(request: Request, model: Holder):
    return await openai_audio(request, model, "translate")


async def openai_audio(request: Request, model: ModelHolder, task: str):
    form = await read_form(request, model.config.max_body_bytes)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPError(400, "no audio: send the file as multipart field 'file'.", "file")
    extension = (upload.filename or "").rsplit(".", 1)[-1].lower() if "." in (upload.filename or "") else ""
    if extension and extension not in AUDIO_EXTENSIONS:
        raise HTTPError(
            415, f"unsupported file type .{extension}: send one of {', '.join(sorted(AUDIO_EXTENSIONS))}.", "file"
        )
    if (upload.size or 0) > model.config.max_bytes:  # Starlette's max_part_size bounds fields, not files
        raise HTTPError(413, f"the file is larger than the {model.config.max_upload_mb:g} MB limit.", "file")
    response_format = form.get("response_format") or "json"
    if response_format not in FORMATS:
        raise HTTPError(400, f"response_format must be one of {', '.join(sorted(FORMATS))}.", "response_format")
    granularities = set(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
    if granularities - {"word", "segment"}:
        raise HTTPError(400, "timestamp_granularities[] takes 'word' and/or 'segment'.", "timestamp_granularities[]")
    logprobs = wants_logprobs(form.getlist("include[]"), response_format)
    changes = {"task": task, "word_timestamps": "word" in granularities or logprobs} | form_options(form)
    if response_format == "diarized_json":
        changes["diarize"] = True
    try:
        streaming = flag("stream", form.get("stream") or False)
    except AsrflowError as e:
        raise HTTPError(400, str(e), "stream") from None
    served = await model.model(form.get("model"))
    if logprobs:
        check_word_probabilities(served, "include[]")
    if references := known_speakers(form):  # checked now, decoded once the upload is admitted
        changes["known_speakers"] = references
    try:
        options = served.transcriber.resolve(changes)
    except AsrflowError as e:
        raise HTTPError(400, str(e)) from None
    reservation = await model.admit([upload.file])  # spooled to disk: never read whole into memory
    try:
        if references:
            options = replace(options, known_speakers=await run_in_threadpool(decoded_speakers, references))
    except BaseException:
        reservation.release()
        raise
    if streaming:
        return stream_segments(model, served, reservation, options, logprobs)
    [result] = await model.run(served, reservation, options, receive=request.receive)
    response = openai_response(result, response_format, task, granularities, logprobs)
    response.headers.update(served.headers)
    return response


def wants_logprobs(include: list[str], response_format: str) -> bool:
    """OpenAI's include[]: "logprobs" is the one thing it takes, with response_format json (as OpenAI's API)."""
    if unknown := sorted(set(include) - {"logprobs"}):
        raise HTTPError(400, f"include[] takes 'logprobs', not {unknown[0][:60]!r}.", "include[]")
    if include and response_format != "json":
        raise HTTPError(400, "include[]=logprobs goes with response_format json, as in OpenAI's API.", "include[]")
    return bool(include)


def stream_segments(
    model: ModelHolder,
    served: Served,
    reservation: Reservation,
    options: TranscribeOptions,
    logprobs: bool = False,
) -> StreamingResponse:
    """Server-sent events: a transcript.text.delta per segment as decoded, then transcript.text.done.
    Each delta also carries the segment and the progress (audio seconds done, of the total), and with
    include[]=logprobs its words' logprobs (all of them again on done).
    A client that goes away cancels the work at its next window."""
    total = None if reservation.declared is None else round(reservation.declared, 3)  # by the header
    loop = asyncio.get_running_loop()
    segments: asyncio.Queue = asyncio.Queue()
    task = asyncio.ensure_future(
        model.run(served, reservation, options, lambda s: loop.call_soon_threadsafe(segments.put_nowait, s))
    )

    async def events():
        sent = 0
        try:
            while True:
                getter = asyncio.ensure_future(segments.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    segment: Segment = getter.result()
                    progress = {"seconds": min(segment.end, total or segment.end), "total_seconds": total}
                    yield segment_events(segment, sent, options.diarize, progress, logprobs)
                    sent += 1
                    continue
                getter.cancel()
                if task.exception() is not None:  # its status and message as the one mapping gives them
                    error = http_error(task.exception(), "POST", "/v1/audio/transcriptions")
                    yield sse({"type": "error", "error": {"message": error.message, "code": error.code}})
                    return
                [result] = task.result()
                for i, segment in enumerate(result.segments[sent:], sent):
                    yield segment_events(segment, i, options.diarize, logprobs=logprobs)
                done = {"type": "transcript.text.done", "text": result.text}
                yield sse(done | ({"logprobs": logprobs_of(result.segments)} if logprobs else {}))
                return
        finally:
            task.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers=served.headers)


def segment_events(
    segment: Segment, i: int, diarized: bool, progress: dict | None = None, logprobs: bool = False
) -> str:
    """A segment's events: its transcript.text.delta (with the segment's times, and the progress); diarizing,
    the delta names its segment (`segment_id`, as in diarized_json) and a transcript.text.segment follows with
    its speaker, as OpenAI streams diarized_json."""
    delta = {
        "type": "transcript.text.delta",
        "delta": (" " if i else "") + segment.text,
        "segment": {"start": segment.start, "end": segment.end, "text": segment.text},
    }
    if progress:
        delta["progress"] = progress
    if logprobs:
        delta["logprobs"] = logprobs_of([segment], first=not i)
    if not diarized:
        return sse(delta)
    labelled = {"start": segment.start, "end": segment.end, "text": segment.text, "speaker": segment.speaker or ""}
    return sse(delta | {"segment_id": f"seg_{i}"}) + sse(
        {"type": "transcript.text.segment", "id": f"seg_{i}"} | labelled
    )


def openai_response(
    result: Transcript, response_format: str, task: str, granularities: set[str], logprobs: bool = False
) -> Response:
    usage = {"type": "duration", "seconds": result.duration}  # as OpenAI bills whisper-1: by the audio's length
    if response_format == "json":
        return JSONResponse(
            {"text": result.text, "usage": usage} | ({"logprobs": logprobs_of(result.segments)} if logprobs else {})
        )
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(WRITERS[response_format](result))
    if response_format == "diarized_json":
        return JSONResponse(
            {
                "task": "transcribe",
                "duration": result.duration,
                "text": result.text,
                "segments": [
                    {
                        "type": "transcript.text.segment",
                        "id": f"seg_{i}",
                        "start": s.start,
                        "end": s.end,
                        "text": s.text,
                        "speaker": s.speaker,
                    }
                    for i, s in enumerate(result.segments)
                ],
                "usage": usage,
            }
        )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    body = {
        "task": task,
        "language": LANGUAGES.get(result.language or "", result.language),
        "duration": result.duration,
        "text": result.text,
        "usage": usage,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": 0,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
                "language": s.language,
                **({"speaker": s.speaker} if s.speaker else {}),
            }
            for i, s in enumerate(result.segments)
        ]
    if "word" in granularities:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for s in result.segments for w in s.words]
    return JSONResponse(body)


def sse(event: dict) -> str:
    return f"data: {json.dumps(event)}\n\n"
