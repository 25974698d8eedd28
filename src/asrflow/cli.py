"""The command line: parse, call the library, print. Errors become one line and an exit code.

The app and its error handling live here; the commands in cli_audio (transcribe, batch, serve) and cli_models."""

from __future__ import annotations

import functools
import sys

import typer

from asrflow.errors import AsrflowError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Whisper speech recognition, managed with MLflow.")


@app.callback()
def quiet_libraries(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the libraries' own logs."),
    debug: bool = typer.Option(
        False, "--debug", envvar="ASRFLOW_DEBUG", help="Print the traceback of unexpected errors."
    ),
):
    """Whisper speech recognition, managed with MLflow."""
    import logging
    import os
    import warnings

    from asrflow.process import configure_process

    configure_process()  # this process's allocator (process.py)
    if debug:
        os.environ["ASRFLOW_DEBUG"] = "1"
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is ours: results only
    if verbose:
        return

    warnings.filterwarnings("ignore")
    warnings.showwarning = lambda *args, **kwargs: None  # MLflow re-enables its warnings with catch_warnings()
    for name in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(name, "false" if name.startswith("MLFLOW") else "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    for name in ("mlflow", "transformers", "faster_whisper", "alembic", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


def friendly_errors(command):
    """Any failure becomes one 'error: ...' line on stderr and a non-zero exit code, never a traceback
    (unless --debug or ASRFLOW_DEBUG=1 asks for it)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except AsrflowError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # the reader went away (`asrflow ... | head`): nothing left to say
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as e:  # noqa: BLE001 - a bug or an environment problem: say so in one line
            import os
            import traceback

            if os.environ.get("ASRFLOW_DEBUG") not in (None, "", "0"):
                traceback.print_exc()
            summary = " ".join(str(e).split())[:300] or "no message"
            typer.echo(
                f"error: unexpected {type(e).__name__} in `asrflow {command.__name__}`: {summary} "
                "(run again with --debug, or ASRFLOW_DEBUG=1, for the traceback)",
                err=True,
            )
            raise typer.Exit(70) from None  # EX_SOFTWARE

    return wrapper
