"""OpenAI's audio API: /v1/audio/transcriptions and /translations, with server-sent events when streaming."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from asrflow.errors import AsrflowError
from asrflow.options import FALLBACK_TEMPERATURES, TranscribeOptions, flag
from asrflow.server.errors import HTTPError, http_error
from asrflow.server.holder import ModelHolder, Reservation, holder
from asrflow.server.pool import Served
from asrflow.transcriber import known_voice
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
# form field -> option, as each option declares (options.py): OpenAI's fields, and asrflow's own beyond them (the
# openai client sends those with extra_body), named as the options are
OPTIONS = TranscribeOptions.openai_fields()
FIELDS = {
    "file",
    "model",
    "response_format",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "stream",
    "chunking_strategy",
    "known_speaker_names[]",
    "known_speaker_references[]",
    *OPTIONS,
}
FORMATS = {"json", "text", "srt", "vtt", "verbose_json", "diarized_json"}
# chunking_strategy server_vad's fields -> the VAD options that do the same
VAD_FIELDS = {
    "threshold": "vad_threshold",
    "silence_duration_ms": "vad_min_silence_duration_ms",
    "prefix_padding_ms": "vad_speech_pad_ms",
}

router = APIRouter()
Holder = Annotated[ModelHolder, Depends(holder)]


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request, model: Holder):
    return await openai_audio(request, model, "transcribe")


@router.post("/v1/audio/translations")
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
    changes = {"task": task, "word_timestamps": "word" in granularities} | chunking(form)
    changes |= {option: form.get(field) for field, option in OPTIONS.items() if form.get(field) not in (None, "")}
    if response_format == "diarized_json":
        changes["diarize"] = True
    try:
        streaming = flag("stream", form.get("stream") or False)
    except AsrflowError as e:
        raise HTTPError(400, str(e), "stream") from None
    served = await model.model(form.get("model"))
    if references := known_speakers(form):  # checked now, decoded once the upload is admitted
        changes["known_speakers"] = references
    try:
        options = served.transcriber.resolve(openai_temperature(changes))
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
        return stream_segments(model, served, reservation, options)
    [result] = await model.run(served, reservation, options, receive=request.receive)
    response = openai_response(result, response_format, task, granularities)
    response.headers.update(served.headers)
    return response


def known_speakers(form) -> dict | None:
    """OpenAI's known_speaker_names[] with known_speaker_references[] (audio data URLs, up to 30 s each):
    name -> encoded clip, the known_speakers option (decoded_speakers decodes them). Never a path: text
    from a client is no file of this server's."""
    names, references = form.getlist("known_speaker_names[]"), form.getlist("known_speaker_references[]")
    if not names and not references:
        return None
    if len(names) != len(references):
        raise HTTPError(
            400,
            "give known_speaker_names[] and known_speaker_references[] in pairs: each name with one clip.",
            "known_speaker_names[]",
        )
    speakers = {}
    for name, reference in zip(names, references):
        head, _, data = str(reference).partition(",")
        try:
            if not (head.startswith("data:") and head.endswith(";base64")):
                raise ValueError("not a data URL")
            speakers[name] = base64.b64decode(data, validate=True)
        except ValueError as e:
            raise reference_error(name, e) from None
    if len(speakers) != len(names):
        raise HTTPError(400, "known_speaker_names[] must be distinct: one clip a name.", "known_speaker_names[]")
    return speakers


def decoded_speakers(references: dict[str, bytes]) -> dict:
    """name -> samples (in a worker thread: decoding is no work for the event loop)."""
    try:
        return {name: known_voice(name, clip) for name, clip in references.items()}
    except AsrflowError as e:
        raise HTTPError(400, str(e), "known_speaker_references[]") from None


def reference_error(name: str, e: Exception) -> HTTPError:
    return HTTPError(
        400,
        f"known speaker {name!r}: its reference must be a short clip as a data URL (data:audio/wav;base64,...): {e}",
        "known_speaker_references[]",
    )


def chunking(form) -> dict:
    """OpenAI's chunking_strategy: "auto" or {"type": "server_vad", "threshold", "prefix_padding_ms",
    "silence_duration_ms"} (sent as JSON, or as the openai client sends objects: chunking_strategy[type]=...) cut
    the audio where speech pauses, which asrflow's VAD does, with server_vad's settings as its own."""
    strategy = form.get("chunking_strategy")
    fields = {k[len("chunking_strategy[") : -1]: v for k, v in form.items() if k.startswith("chunking_strategy[")}
    if strategy in (None, "") and not fields:
        return {}
    try:
        fields = fields or ({"type": "auto"} if strategy == "auto" else dict(json.loads(strategy)))
    except (ValueError, TypeError, RecursionError):
        fields = {}
    if fields.get("type") not in ("auto", "server_vad") or (fields["type"] == "auto" and len(fields) > 1):
        raise HTTPError(400, 'chunking_strategy must be "auto" or {"type": "server_vad", ...}.', "chunking_strategy")
    unknown = sorted(set(fields) - {"type", *VAD_FIELDS})
    if unknown:
        raise HTTPError(
            400,
            f"chunking_strategy has no field {unknown[0]!r}: server_vad takes {', '.join(VAD_FIELDS)}.",
            "chunking_strategy",
        )
    changes = {"vad_filter": True} | {VAD_FIELDS[k]: v for k, v in fields.items() if k in VAD_FIELDS}
    try:
        TranscribeOptions.check(changes)  # its values, named as chunking_strategy; resolved with the rest
    except AsrflowError as e:
        raise HTTPError(400, f"chunking_strategy: {e}", "chunking_strategy") from None
    return changes


def openai_temperature(changes: dict) -> dict:
    """OpenAI's temperature: 0 means Whisper's fallback (start at 0, go hotter while the text looks wrong);
    a higher value starts there and falls back from it."""
    if "temperature" not in changes:
        return changes
    try:
        start = float(changes["temperature"])
    except (TypeError, ValueError):
        return changes  # the resolver names the problem
    rest = {k: v for k, v in changes.items() if k != "temperature"}
    if start == 0:
        return rest
    return rest | {"temperature": [start] + [t for t in FALLBACK_TEMPERATURES if t > start]}


async def read_form(request: Request, max_body_bytes: int):
    """The form: any part (a file, or a text field such as a speaker's data URL) is bounded by the body's limit
    (BodyLimit raises BodyTooLarge from receive), which Starlette's own part limit, set to it, never undercuts."""
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=max_body_bytes)
    except (MultiPartException, StarletteHTTPException) as e:  # Starlette's own 400 for a malformed form, in an app
        detail = getattr(e, "detail", None) or getattr(e, "message", None) or str(e)
        raise HTTPError(400, f"expected a multipart/form-data body with a 'file' field ({detail}).") from None
    unknown = sorted(k for k in set(form.keys()) - FIELDS if not k.startswith("chunking_strategy["))  # its fields
    if unknown:
        raise HTTPError(400, f"unknown parameter(s): {', '.join(unknown)}.", unknown[0])
    return form


def stream_segments(
    model: ModelHolder,
    served: Served,
    reservation: Reservation,
    options: TranscribeOptions,
) -> StreamingResponse:
    """Server-sent events: a transcript.text.delta per segment as decoded, then transcript.text.done.
    Each delta also carries the segment and the progress (audio seconds done, of the total).
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
                    sent += 1
                    yield sse(
                        {
                            "type": "transcript.text.delta",
                            "delta": (" " if sent > 1 else "") + segment.text,
                            "segment": {"start": segment.start, "end": segment.end, "text": segment.text},
                            "progress": {"seconds": min(segment.end, total or segment.end), "total_seconds": total},
                        }
                    )
                    continue
                getter.cancel()
                if task.exception() is not None:  # its status and message as the one mapping gives them
                    error = http_error(task.exception(), "POST", "/v1/audio/transcriptions")
                    yield sse({"type": "error", "error": {"message": error.message, "code": error.code}})
                    return
                [result] = task.result()
                for segment in result.segments[sent:]:
                    yield sse({"type": "transcript.text.delta", "delta": " " + segment.text})
                yield sse({"type": "transcript.text.done", "text": result.text})
                return
        finally:
            task.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers=served.headers)


def openai_response(result: Transcript, response_format: str, task: str, granularities: set[str]) -> Response:
    if response_format == "json":
        return JSONResponse({"text": result.text})
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
                "usage": {"type": "duration", "seconds": result.duration},
            }
        )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    body = {
        "task": task,
        "language": LANGUAGES.get(result.language or "", result.language),
        "duration": result.duration,
        "text": result.text,
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
