"""The documentation's examples run as written: the README's five-minute tour (docs/index.md holds the same
blocks), its shell lines through the `asrflow` command and its Python blocks as a reader would paste them, against
this run's MLflow store and a real `asrflow serve`; and every other bash and python block of docs/*.md, in page
order, or the test that runs its command where it cannot run here (NOT_RUN)."""

import contextlib
import io
import re
import shlex
from pathlib import Path

import httpx
from conftest import BIN, JFK_TEXT, cli, environment, free_port, mlflow_state, start, stop, wait_until_up

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
            code = re.sub(r"(?<=[ :])8000\b", str(port), code)
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
    # what a realtime session sends as an error event, without raising, is on the page too
    assert "| `error event: session_limit_reached` | this server holds at most {…} realtime sessions" in errors
    assert "| `failed event: server_error` | the server failed on this turn. |" in errors
    assert hooks._cell("<img src=x onerror=1> | *a*\nb") == "&lt;img src=x onerror=1&gt; \\| \\*a\\* b"


# Blocks of docs/*.md that test_the_docs_examples_run_as_written does not run, each with the test that runs its
# command (or why nothing does): a new block is run, or listed here, never silently skipped.
NOT_RUN = {
    ("index.md", "make demo"): "not in the suite: `make demo` sets up .venv (CI runs make setup-test)",
    (
        "index.md",
        "asrflow transcribe src/asrflow/samples/jfk.flac --format srt",
    ): "test_docs.py::test_the_readmes_tour_runs_as_written",
    ("index.md", "from asrflow import load_transcriber"): "test_docs.py::test_the_readmes_tour_runs_as_written",
    (
        "index.md",
        "asrflow log --register whisper --alias champion",
    ): "test_docs.py::test_the_readmes_tour_runs_as_written",
    (
        "index.md",
        "asrflow serve models:/whisper@champion --port 8000",
    ): "test_docs.py::test_the_readmes_tour_runs_as_written",
    ("index.md", "import openai"): "test_docs.py::test_the_readmes_tour_runs_as_written",
    ("development.md", "make demo"): "not in the suite: `make demo` sets up .venv; `make test` is the suite itself",
    (
        "development.md",
        "make check",
    ): "not in the suite: they run the suite's tiers and tools (CI: make lint, make test-floors)",
    (
        "mlflow.md",
        "asrflow log --flavor transformers",
    ): "test_mlflow.py::test_cli_against_a_tracking_server test_mlflow.py::test_reference_only_logs_stay_small",
    (
        "mlflow.md",
        "MLFLOW_TRACKING_URI=sqlite:///$HOME/.cache/asrflow/mlflow.db \\",
    ): "test_mlflow.py::test_mlflow_models_serve_accepts_the_logged_example",
    (
        "mlflow.md",
        "export MLFLOW_TRACKING_URI=sqlite:///$HOME/.cache/asrflow/mlflow.db",
    ): "test_mlflow.py::test_a_registered_model_serves_from_an_environment_built_from_its_own_requirements",
    (
        "batch.md",
        'asrflow batch tests/data/manifest.jsonl -m models:/whisper@champion -o out-spark/ --engine spark --master "local[2]"',
    ): "test_batch.py::test_spark_engine_matches_local",
    (
        "server.md",
        "pip install 'asrflow[ray]'",
    ): "test_ray.py::test_replicas_scale_with_load_and_answer_as_the_standalone_server_does",
}
# the order the pages run in: the MLflow page registers the models the others name
PAGES = ["mlflow.md", "transcribing.md", "batch.md", "evaluation.md", "server.md", "security.md"]


def docs_blocks() -> list[tuple[str, int, str, str]]:
    """Every code block of docs/*.md but diagrams and programs' output: (page, line, language, code)."""
    found = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text()
        blocks = list(re.finditer(r"^```(\w+)\n(.*?)^```", text, re.MULTILINE | re.DOTALL))
        # a fence this cannot read (indented, untagged, with a title) would be a block never run: none may be
        assert text.count("```") == 2 * len(blocks), f"docs/{path.name}: a code fence without its language"
        for match in blocks:
            if match[1] not in ("mermaid", "text"):  # a diagram, a program's output
                found.append((path.name, text[: match.start()].count("\n") + 1, match[1], match[2]))
    return found


def shell_lines(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped."""
    return [line for line in code.replace("\\\n", " ").splitlines() if line.split("#", 1)[0].strip()]


def heard(reference: str, printed: str) -> bool:
    """Most of `reference`'s words are in `printed` (tiny.en's few misheard words aside)."""
    words = re.findall(r"[a-z']+", reference.lower())
    return sum(w in re.findall(r"[a-z']+", printed.lower()) for w in words) >= 0.8 * len(words)


def test_the_docs_examples_run_as_written(tmp_path, monkeypatch, ct2_transcriber, corpus):
    """Every bash and python block of the guides runs as a reader would paste them, from a clone's root, in page
    order against this run's MLflow store: `asrflow` lines in this process (`cli`), other commands in a shell, Python
    blocks through exec, `asrflow serve` on a real socket in a thread. Models load once (the session's tiny.en is
    reused). What is not run here is in NOT_RUN, with the test that runs it."""
    import mlflow
    import uvicorn

    import asrflow.transcriber

    blocks = docs_blocks()
    keys = {(page, code.splitlines()[0].split("  #")[0].rstrip()) for page, _, _, code in blocks}
    assert set(NOT_RUN) <= keys, set(NOT_RUN) - keys  # every entry names a block there is
    for covered in " ".join(v for v in NOT_RUN.values() if not v.startswith("not ")).split():
        module, name = covered.split("::")
        assert f"def {name}(" in (ROOT / "tests" / module).read_text(), covered
    to_run = [b for b in blocks if (b[0], b[3].splitlines()[0].split("  #")[0].rstrip()) not in NOT_RUN]
    assert {page for page, *_ in to_run} == set(PAGES), {page for page, *_ in to_run}

    # the clone as the reader's working folder, whose outputs (out/, call.wav, tiny-hf) stay out of the clone
    for name in ("src", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASRFLOW_API_KEY", "docs-key")
    # every load of a model it has loaded already reuses it, the session's tiny.en included
    backends = {
        ("ctranslate2", ct2_transcriber.source.format, ct2_transcriber.source.location, "cpu", "default"): (
            ct2_transcriber.backend
        )
    }
    load_backend = asrflow.transcriber.load_backend

    def load_once(backend, source, device, compute_type):
        key = (backend, source.format, source.location, device, compute_type)
        if key not in backends:
            backends[key] = load_backend(backend, source, device, compute_type)
        return backends[key]

    monkeypatch.setattr(asrflow.transcriber, "load_backend", load_once)
    # `asrflow serve` runs its app on a real socket in this process, and returns once it is ready
    servers = []

    def run_in_a_thread(app, host, port, **settings):
        import threading

        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        wait_until_up(f"http://127.0.0.1:{port}/ready", seconds=60)

    monkeypatch.setattr(uvicorn, "run", run_in_a_thread)
    # in a store where `whisper` is new, the versions the pages name (champion 1, challenger 2) are right
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        from asrflow.registry import tracking_uri

        mlflow.MlflowClient(tracking_uri()).delete_registered_model("whisper")

    printed, ports = {}, {}
    try:
        for page in PAGES:
            ports[page] = port = free_port()  # a page's server and its clients: the port the page says, 8000
            for _, line, lang, code in [b for b in to_run if b[0] == page]:
                where = f"docs/{page}:{line}"
                code = re.sub(r"(?<=[ :])8000\b", str(port), code)
                if lang == "python":
                    saved = mlflow_state()
                    try:
                        with contextlib.redirect_stdout(io.StringIO()) as out:
                            exec(compile(code, where, "exec"), {})  # noqa: S102 - the docs' code, as a reader runs it
                    finally:
                        mlflow_state(saved)
                    printed[f"{page} python, {where}"] = out.getvalue()
                    continue
                assert lang == "bash", where
                for command in shell_lines(code):
                    printed[f"{page}: {command}"] = shell(command, where)
        # the exposed server of the security page: its allowed name answered with the key, a foreign one refused
        exposed, key = f"http://127.0.0.1:{ports['security.md']}/v1/models", {"Authorization": "Bearer docs-key"}
        assert httpx.get(exposed, headers={**key, "Host": "asr.example.com"}).status_code == 200
        assert httpx.get(exposed, headers={**key, "Host": "rebinding.example"}).status_code == 421
        assert httpx.get(exposed, headers={"Host": "asr.example.com"}).status_code == 401
    finally:
        for server in servers:
            server.should_exit = True

    def output(start: str) -> str:
        return next(v for k, v in printed.items() if start in k)

    texts = {path.name: text for path, text in corpus}
    assert heard(texts["dev001.mp3"], output("transcribing.md python"))
    assert output("--format srt").startswith("1\n00:00:00,000 --> ") and heard(
        texts["dev001.mp3"], output("--format srt")
    )
    assert (tmp_path / "out" / "dev000.vtt").read_text().startswith("WEBVTT")
    assert heard(texts["dev004.wav"], (tmp_path / "out" / "dev004.srt").read_text())
    assert (tmp_path / "tiny-ct2" / "model.bin").is_file()
    assert "left" in output("--channels split") and "right" in output("--channels split")
    assert heard(JFK_TEXT, output("mlflow.md python"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == [
        "en-gb-scotland+m7.ogg.json",
        "en-gb-x-rp+f4.ogg.json",
        "en-us+klatt.ogg.json",
    ]
    assert "wer" in output("asrflow evaluate") and "difference" in output("asrflow compare")
    assert output("asrflow promote").startswith(("promoted: ", "refused: "))
    assert heard(texts["dev000.wav"], output("server.md python"))


def shell(command: str, where: str) -> str:
    """One line of a bash block, as the reader's shell runs it: `asrflow` in this process, anything else in bash."""
    import os
    import subprocess

    if not command.startswith("asrflow "):
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (where, command, done.stderr)
        return done.stdout
    args = shlex.split(os.path.expandvars(command.split("  #", 1)[0]))
    done = cli(*args[1:])
    refusable = args[1] == "promote"  # exit 1 when refused, as the page says
    assert done.returncode == 0 or (refusable and done.returncode == 1), (where, command, done.stderr)
    return done.stdout
