"""The `asrflow` command (also `python -m asrflow`, and this file given to spark-submit): the app of cli.py with
the commands of cli_audio, cli_models and cli_serve, which import the app, never the other way round."""

from asrflow import cli_audio, cli_models, cli_serve  # noqa: F401 - they add their commands to the app
from asrflow.cli import app


def main():
    app()


if __name__ == "__main__":
    main()
