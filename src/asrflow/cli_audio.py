"""The commands that take audio: transcribe, batch (serve: cli_serve)."""

from __future__ import annotations

import functools
import inspect
import json
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path

import typer

from asrflow.cli import app, friendly_errors
from asrflow.models import DEFAULT_MODEL
from asrflow.options import TranscribeOptions


def _progress_bar(total: float, enabled: bool, description: str):
    from tqdm import tqdm

    return tqdm(total=round(total, 1), unit="s", desc=description, disable=not enabled, leave=False, file=sys.stderr)


def decoding_flags(saved: bool = False) -> dict[str, tuple[str, type, typer.models.OptionInfo]]:
    """The decoding flags that transcribe and batch share: the flag of each option that declares one (options.py),
    with its help and default from the declaration: parameter name -> (option, type, typer.Option). Each defaults
    to None: a flag not given leaves the model's saved value standing. `saved`: only those a model can save (its
    params: not known speakers), for `asrflow log`."""
    flags = {}
    hints = typing.get_type_hints(TranscribeOptions)
    for declared in fields(TranscribeOptions):
        flag = declared.metadata["cli"]
        if flag is None or (saved and not declared.metadata["params"]):
            continue
        flag = flag or declared.name.replace("_", "-")
        text = declared.metadata["help"] + shown_default(declared.default)
        if declared.type == "bool":
            kind, info = bool | None, typer.Option(None, f"--{flag}/--no-{flag}", help=text)
        elif _pairs(hints[declared.name]):  # (name, value) pairs, known speakers': NAME=VALUE, repeated
            kind, info = list[str] | None, typer.Option(None, f"--{flag}", help=text, metavar="NAME=CLIP")
        else:
            kind, info = str | None, typer.Option(None, f"--{flag}", help=text)
        flags[flag.replace("-", "_")] = (declared.name, kind, info)
    return flags


def shown_default(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f" (default {'on' if value else 'off'})"
    if isinstance(value, tuple):
        return f" (default {','.join(f'{v:g}' for v in value)})"
    return f" (default {value:g})" if isinstance(value, (int, float)) else f" (default {value})"


def _pairs(hint) -> bool:
    """Whether an option's type is a tuple of pairs, (X, Y) | None included."""
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    element = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple and typing.get_args(hint) else None
    return typing.get_origin(element) is tuple


NOT_GIVEN = (None, [], ())  # a repeated flag given no times is []


def with_decoding_flags(command=None, *, saved: bool = False):
    """Adds the decoding flags to a command (`saved`: only those a model can save); it gets those given on the
    command line as `changes` (option -> value), checked before any model loads, known speakers' clips included.
    Not given (None): the model's saved value stands."""
    if command is None:
        return functools.partial(with_decoding_flags, saved=saved)
    declared = decoding_flags(saved)
    signature = inspect.signature(command)
    flags = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (_, kind, option) in declared.items()
    ]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        given = {declared[name][0]: value for name in declared if (value := kwargs.pop(name)) not in NOT_GIVEN}
        checked = TranscribeOptions.check(given)  # a bad value fails before any model loads
        for name, clip in checked.get("known_speakers") or ():
            _check_clip(name, clip)
        return command(*args, changes=given, **kwargs)

    kept = [p for p in signature.parameters.values() if p.name != "changes"]
    wrapper.__signature__ = signature.replace(parameters=kept + flags)
    return wrapper


def _check_clip(name: str, clip: str) -> None:
    from asrflow.audio import check_audio
    from asrflow.errors import AsrflowError

    try:
        check_audio(clip)
    except AsrflowError as e:
        raise type(e)(f"--speaker {name}={clip}: {e}") from None


@app.command()
@friendly_errors
@with_decoding_flags
def transcribe(
    files: list[str] = typer.Argument(..., help="Audio files (or http(s) URLs with --allow-urls)."),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="bundled:NAME, a model directory, a hub id or models:/ URI."
    ),
    backend: str | None = typer.Option(None, help="ctranslate2 (fast) or transformers (default: the model's own)."),
    format: str = typer.Option("txt", "--format", "-f", help="txt, json, srt, vtt, tsv or jsonl (a segment per line)."),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", "-o", help="Write FILE.FORMAT here instead of stdout."
    ),
    compute_type: str = typer.Option(
        "default",
        help="CTranslate2 compute type: by default int8 on CPUs with VNNI, float32 on other x86 CPUs, float16 on GPU (or int8_float32, float32...).",
    ),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    allow_urls: bool = typer.Option(False, "--allow-urls", help="Allow http(s) URLs as inputs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="With --output-dir: skip inputs whose output exists, and "
        "continue a killed run's file after its last complete segment.",
    ),
    changes: dict | None = None,
):
    """Transcribe audio files; print the result, or write one file per input with --output-dir.

    Options given here override those saved with a model (models:/...), which override the defaults.
    With --output-dir the segments are journaled as they are decoded, so that --resume loses nothing."""
    from asrflow.audio import check_audio
    from asrflow.batch import Job, unique_jobs
    from asrflow.errors import InvalidOptionError
    from asrflow.journal import journal_path, transcribe_resumably
    from asrflow.transcriber import load_transcriber
    from asrflow.writers import FORMATS, get_writer, output_folder, write_file, write_incrementally

    writer = get_writer(format)
    if resume and output_dir is None:
        raise InvalidOptionError("--resume continues the files of an --output-dir: give one.")
    if output_dir is not None:
        files = [
            job.source
            for job in unique_jobs(
                [Job(f, _output_stem(f)) for f in files], fix="transcribe them into different --output-dir folders"
            )
        ]
        output_folder(output_dir)
    # bad inputs fail before the model loads, from their headers: one file at a time is decoded, not all at once
    declared = {f: check_audio(f, allow_urls=allow_urls) for f in files}
    transcriber = load_transcriber(model, backend=backend, device=device, compute_type=compute_type)
    options = transcriber.resolve(changes)
    total = sum(seconds or 0.0 for seconds in declared.values())
    show = not quiet and sys.stderr.isatty() and total > 60
    with _progress_bar(total, show, "transcribing") as bar:
        done = 0.0
        for name in files:
            target = None if output_dir is None else output_dir / f"{_output_stem(name)}.{format}"
            if resume and target.is_file():
                done += declared[name] or 0.0
                continue
            if target is None:
                stream = transcriber.stream(name, options, allow_urls=allow_urls)  # decoded as it goes
            else:
                stream = transcribe_resumably(
                    transcriber,
                    name,
                    options,
                    journal_path(target),
                    resume,
                    _note,
                    allow_urls=allow_urls,
                )
            segments = _advancing(stream, bar, done)
            if output_dir is None and format in FORMATS:  # printed as decoded: a cut-short run leaves a valid prefix
                write_incrementally(format, segments, sys.stdout, lambda stream=stream: stream.language)
                sys.stdout.write(FORMATS[format].tail(stream.transcript([])))
            else:
                result = stream.transcript(list(segments))
                if output_dir is None:
                    sys.stdout.write(writer(result))
                else:
                    write_file(result, target, format)
                    journal_path(target).unlink(missing_ok=True)
            done += stream.duration
            bar.update(round(done - bar.n, 1))


def _output_stem(name: str) -> str:
    """An input's output file name, less the format's extension: its own name less its extension (and a URL's query)."""
    return Path(name.split("?")[0]).stem


def _note(message: str) -> None:
    typer.echo(f"note: {message}", err=True)


def _advancing(segments, bar, done: float):
    """The segments, moving the progress bar to each one's end as it comes."""
    for segment in segments:
        bar.update(round(done + segment.end - bar.n, 1))
        yield segment


@app.command()
@friendly_errors
@with_decoding_flags
def batch(
    source: Path = typer.Argument(
        ..., help="A folder of audio (recursive) or a .jsonl/.csv manifest with an 'audio' column."
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="models:/NAME@alias, or any model name."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Outputs mirror the input tree here."),
    format: str = typer.Option(
        "json,srt,txt", "--format", "-f", help="Comma-separated: txt, json, srt, vtt, tsv, jsonl."
    ),
    engine: str = typer.Option("local", help="local (one process) or spark."),
    master: str = typer.Option("local[2]", help="Spark master, with --engine spark."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    changes: dict | None = None,
):
    """Transcribe a collection; re-runs skip finished files; failures go to OUT/errors.jsonl (exit 1).

    Options given here override those saved with a model (models:/...), which override the defaults."""
    from asrflow.batch import run_batch

    formats = [f.strip() for f in format.split(",") if f.strip()]
    summary = run_batch(
        source, model, output_dir, formats, changes, engine, master, show_progress=not quiet and sys.stderr.isatty()
    )
    if as_json:
        typer.echo(json.dumps(summary.to_dict()))
    else:
        typer.echo(
            f"{summary.transcribed} transcribed, {summary.skipped} already done, {summary.failed} failed "
            f"of {summary.files} files; {summary.audio_seconds / 60:.1f} min of audio in {summary.wall_seconds:.1f} s "
            f"({summary.real_time_factor}x real time) -> {output_dir}"
        )
        if summary.failed:
            typer.echo(f"failures are listed in {output_dir / 'errors.jsonl'}", err=True)
    if summary.failed:
        raise typer.Exit(1)
