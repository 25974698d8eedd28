"""The documentation's examples run as written: the README's five-minute tour (docs/index.md holds the same
blocks), its shell lines through the `asrflow` command and its Python blocks as a reader would paste them, against
this run's MLflow store and a real `asrflow serve`."""

import contextlib
import io
import re
import shlex
from pathlib import Path

from conftest import BIN, JFK_TEXT, cli, environment, free_port, start, stop

from asrflow.metrics import word_error_rate

ROOT = Path(__file__).parents[1]


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def tour(path: Path, heading: str) -> list[tuple[str, str]]:
    text = path.read_text()
    return code_blocks(text.split(heading, 1)[1].split("\n## ", 1)[0])


def test_the_readmes_tour_runs_as_written(monkeypatch):
    blocks = tour(ROOT / "README.md", "## A five-minute tour")
    assert blocks == tour(ROOT / "docs" / "index.md", "## A five-minute tour")  # the site's copy is the same
    assert [lang for lang, _ in blocks] == ["bash", "python", "bash", "bash", "python"]
    monkeypatch.chdir(ROOT)  # the examples name the sample by its path in a clone
    port, printed, server = free_port(), [], None
    try:
        for lang, code in blocks:
            code = code.replace("8000", str(port))
            if lang == "python":
                with contextlib.redirect_stdout(io.StringIO()) as out:
                    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's code, as a reader runs it
                printed.append(out.getvalue())
                continue
            for line in code.strip().splitlines():
                args = shlex.split(line.split("#", 1)[0])
                assert args[0] == "asrflow", line
                if args[1] == "serve":  # a real server, as a reader starts it; the next block is its client
                    server = start([BIN / "asrflow", *args[1:]], f"http://127.0.0.1:{port}/ready", environment())
                    continue
                done = cli(*args[1:])
                assert done.returncode == 0, (line, done.stderr)
                printed.append(done.stdout)
    finally:
        if server is not None:
            stop(server)
    srt, api, logged, registered, served = printed
    cues = [line for line in srt.splitlines() if line and not re.fullmatch(r"\d+|[\d:,]+ --> [\d:,]+", line)]
    assert srt.startswith("1\n00:00:00,000 --> ") and word_error_rate([JFK_TEXT], [" ".join(cues)]) < 0.1
    assert word_error_rate([JFK_TEXT], [api.splitlines()[0]]) < 0.1 and "start=" in api.splitlines()[1]
    assert "models:/whisper/" in logged or "runs:/" in logged
    assert word_error_rate([JFK_TEXT], [registered]) < 0.1
    assert word_error_rate([JFK_TEXT], [served]) < 0.1


def test_the_generated_pages_show_the_codes_text_as_text():
    """The docs' generated tables (error messages, CLI help, bench values) carry text from the code: a message's
    `<key>` was a tag to the browser, and vanished from the troubleshooting page."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    errors = hooks.error_messages()
    assert "send 'Authorization: Bearer &lt;key&gt;'" in errors and "<key>" not in errors
    assert hooks._cell("<img src=x onerror=1> | *a*\nb") == "&lt;img src=x onerror=1&gt; \\| \\*a\\* b"
