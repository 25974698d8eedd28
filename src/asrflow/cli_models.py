"""The commands about models: convert, info, log, register, demo, evaluate, compare, promote."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from asrflow.cli import app, friendly_errors
from asrflow.cli_audio import with_decoding_flags
from asrflow.models import DEFAULT_MODEL
from asrflow.registry import DEFAULT_EXPERIMENT


@app.command()
@friendly_errors
def convert(
    source: str = typer.Argument(..., help="A model: bundled:NAME, a directory, or a hub id."),
    destination: Path = typer.Argument(..., help="Directory to write."),
    to: str = typer.Option(..., "--to", help="transformers or ctranslate2."),
    quantization: str = typer.Option("float16", help="CTranslate2 weight type when --to ctranslate2."),
):
    """Convert a Whisper model between CTranslate2 and transformers formats."""
    from asrflow.convert import ct2_to_transformers, transformers_to_ct2
    from asrflow.errors import InvalidOptionError
    from asrflow.models import resolve_model

    found = resolve_model(source)
    if to == "transformers":
        if found.format != "ctranslate2":
            raise InvalidOptionError(f"{source} is already in {found.format} format.")
        ct2_to_transformers(found.location, destination)
    elif to == "ctranslate2":
        if found.format == "ctranslate2":
            raise InvalidOptionError(f"{source} is already in CTranslate2 format.")
        transformers_to_ct2(found.location, destination, quantization)
    else:
        raise InvalidOptionError(f"--to must be transformers or ctranslate2, not {to!r}.")
    typer.echo(str(destination))


@app.command()
@friendly_errors
def info(model: str = typer.Argument(DEFAULT_MODEL), as_json: bool = typer.Option(False, "--json")):
    """Show where a model's files are and what identifies them."""
    from asrflow.models import model_info, resolve_model

    details = model_info(resolve_model(model))
    typer.echo(json.dumps(details) if as_json else "\n".join(f"{k}: {v}" for k, v in details.items()))


@app.command()
@friendly_errors
@with_decoding_flags(saved=True)
def log(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
    flavor: str = typer.Option(
        "asrflow", help="asrflow (pyfunc around either backend) or transformers (the tutorial's)."
    ),
    backend: str = typer.Option("ctranslate2", help="Backend of the asrflow flavor."),
    reference_only: bool = typer.Option(
        False, "--reference-only", help="Record where the weights are instead of copying them."
    ),
    experiment: str = typer.Option(DEFAULT_EXPERIMENT),
    register_as: str | None = typer.Option(None, "--register", help="Also register as this model name."),
    alias: str | None = typer.Option(None, help="Alias to point at the registered version."),
    as_json: bool = typer.Option(False, "--json"),
    changes: dict | None = None,
):
    """Log a Whisper model to MLflow (and optionally register it); prints its model URI.

    Decoding options given here are saved with the model (asrflow flavor): they become its defaults, which a
    caller's own options override."""
    from dataclasses import asdict

    from asrflow.lifecycle import log as log_model
    from asrflow.options import TranscribeOptions

    options = TranscribeOptions().resolve(changes) if changes else None
    logged = log_model(model, flavor, backend, reference_only, experiment, register_as, alias, options)
    typer.echo(json.dumps(asdict(logged)) if as_json else logged.registered or logged.model_uri)


@app.command()
@friendly_errors
def register(
    name: str = typer.Argument(..., help="Registered model name."),
    model_uri: str | None = typer.Option(None, "--model-uri", help="Model to register; default: the last one logged."),
    alias: str | None = typer.Option(None, help="Alias to point at the new version, e.g. champion."),
    experiment: str = typer.Option(DEFAULT_EXPERIMENT),
):
    """Register a logged model as a new version of NAME; prints models:/NAME/VERSION."""
    from asrflow.lifecycle import latest_logged_model
    from asrflow.registry import register as register_model

    version = register_model(model_uri or latest_logged_model(experiment), name, alias)
    typer.echo(f"models:/{name}/{version.version}")


@app.command()
@friendly_errors
def demo():
    """MLflow's Whisper tutorial end to end, offline, on the bundled model and sample."""
    from asrflow.demo import run_demo

    run_demo(typer.echo)


def _print_evaluations(results, as_json: bool):
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results] if len(results) > 1 else results[0].to_dict()))
        return
    # the evaluation's own metrics, in its order, less the run's totals; der, language accuracy: when referenced
    names = [
        n
        for n in results[0].metrics()
        if n not in ("audio_seconds", "wall_seconds") and all(n in r.metrics() for r in results)
    ]
    width = max(14, *(len(r.model) + 2 for r in results))
    header = f"{'metric':18}" + "".join(f"{r.model:>{width}}" for r in results)
    if len(results) == 2:
        header += f"{'difference':>14}"
    typer.echo(header)
    for name in names:
        values = [r.metrics()[name] for r in results]
        line = f"{name:18}" + "".join(f"{v:>{width}.4g}" for v in values)
        if len(values) == 2:
            line += f"{values[1] - values[0]:>+14.4g}"
        typer.echo(line)
    worst = results[0].rows[:3]
    if worst and worst[0]["wer"] > 0:
        typer.echo("worst utterances:")
        for row in worst:
            typer.echo(f"  {row['audio']}: WER {row['wer']:.2f}  ref: {row['reference']}  hyp: {row['hypothesis']}")


@app.command()
@friendly_errors
def evaluate(
    model_uri: str = typer.Argument(..., help="models:/NAME@alias, models:/NAME/VERSION, or any model name."),
    dataset: Path = typer.Argument(..., help="manifest.jsonl / .csv, or a folder of audio with .txt references."),
    language: str | None = typer.Option(None),
    limit: int | None = typer.Option(None, help="Only the first N utterances."),
    as_json: bool = typer.Option(False, "--json"),
):
    """WER, CER, speed and memory of a model on a dataset, logged to MLflow."""
    from asrflow.evaluate import run_evaluation

    _print_evaluations([run_evaluation(model_uri, dataset, language, limit)], as_json)


@app.command()
@friendly_errors
def compare(
    model_a: str = typer.Argument(...),
    model_b: str = typer.Argument(...),
    dataset: Path = typer.Argument(...),
    language: str | None = typer.Option(None),
    limit: int | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
):
    """Evaluate two models on the same audio in one MLflow run and print the differences."""
    from asrflow.evaluate import compare as compare_models

    _print_evaluations(list(compare_models(model_a, model_b, dataset, language, limit)), as_json)


@app.command()
@friendly_errors
def promote(
    name: str = typer.Argument(..., help="Registered model name."),
    candidate: str = typer.Option(..., help="Candidate version."),
    dataset: Path = typer.Option(..., help="Evaluation dataset."),
    alias: str = typer.Option("champion"),
    tolerance: float = typer.Option(0.0, help="How much worse (absolute WER) the candidate may be."),
    language: str | None = typer.Option(None),
    limit: int | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
):
    """Move ALIAS to the candidate only if its WER is not worse than the current holder's."""
    from dataclasses import asdict

    from asrflow.evaluate import promote as promote_version

    decision = promote_version(name, alias, candidate, dataset, tolerance, language, limit)
    if as_json:
        typer.echo(json.dumps(asdict(decision)))
    else:
        typer.echo(("promoted: " if decision.promoted else "refused: ") + decision.reason)
    if not decision.promoted:
        raise typer.Exit(1)
