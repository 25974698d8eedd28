"""MkDocs hooks: the pages that are generated, not typed.

docs/cli.md's `{{ cli }}` becomes the CLI reference, read from the Typer app (every command, argument and option
with its help and default); docs/performance.md's `{{ performance }}` becomes the bench's tables, read from
bench/results/*.json, each with its date and CPU as the bench recorded them; docs/troubleshooting.md's `{{ errors }}`
becomes every error message in the source, by module, with what the realtime sessions send as `error` events.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "{{ cli }}" in markdown:
        markdown = markdown.replace("{{ cli }}", cli_reference())
    if "{{ errors }}" in markdown:
        markdown = markdown.replace("{{ errors }}", error_messages())
    if "{{ performance }}" in markdown:
        markdown = markdown.replace("{{ performance }}", performance())
    return markdown


def cli_reference() -> str:
    import typer

    from asrflow import cli_audio, cli_models, cli_serve  # noqa: F401 - they add their commands to the app
    from asrflow.cli import app

    group = typer.main.get_command(app)
    out = [_clean(group.help or ""), "", _table(group.params)]
    for name, command in group.commands.items():
        out += [f"## asrflow {name}", "", _clean(command.help or ""), "", _table(command.params)]
    return "\n".join(out)


def _table(params) -> str:
    rows = ["| argument or option | default | what it does |", "|---|---|---|"]
    for p in params:
        if p.name == "help":
            continue
        if p.param_type_name == "option":
            names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        else:
            names = f"`{p.name.upper()}`" + (" (required)" if p.required else "")
        default = (
            ""
            if p.default is None or p.default is False or p.default in ((), []) or callable(p.default)
            else f"`{p.default}`"
        )
        rows.append(f"| {names} | {default} | {_cell(_clean(p.help or ''))} |")
    return "\n".join(rows) + "\n"


def _clean(text: str) -> str:
    return text.replace("\b", "").strip()


def _cell(value) -> str:
    """A value as a table cell's text: HTML escaped (a message's `<key>` is a placeholder, not a tag), Markdown's
    marks taken literally, on one line."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    text = value if isinstance(value, str) else json.dumps(value)
    text = html.escape(" ".join(text.split()), quote=False)
    for mark in "\\`*_[]|":
        text = text.replace(mark, "\\" + mark)
    return text


def performance() -> str:
    out = []
    for path in sorted(RESULTS.glob("*.json"), key=lambda p: (not p.name.startswith("bench"), p.name)):
        data = json.loads(path.read_text())
        out.append(f"## {path.stem}\n\n{_stamp(data, path)}\n")
        out.append(_tables(data))
    return "\n".join(out)


def _stamp(data, path: Path) -> str:
    data = data if isinstance(data, dict) else {}
    machine = data.get("machine") or {}
    cpu = machine.get("cpu") or data.get("cpu") or "not recorded by this bench"
    return (
        f"From `bench/results/{path.name}` (the printed report: `{path.with_suffix('.txt').name}`). "
        f"Date: {data.get('date') or 'not recorded'}; CPU: {cpu}; commit: {data.get('commit') or 'not recorded'}."
    )


CORPORA = {
    "long": "long audio (the dev corpus concatenated)",
    "files": "dev corpus, file by file",
    "heldout_long": "held-out long files, made at bench time",
    "heldout_clean": "held-out short clips, clean",
    "heldout_noisy": "held-out short clips, 10 dB SNR",
}


def _tables(data) -> str:
    if isinstance(data, dict) and isinstance(data.get("results"), dict) and "machine" in data:  # bench/run.py
        out = []
        for corpus, title in CORPORA.items():
            rows = [r for r in data["results"].values() if f"{corpus}_wer" in r]
            if not rows:
                continue
            peer = next((r for r in rows if r["system"] == "fw-sequential"), None)
            table = [f"**{title}**\n", "| system | RTFx | WER | deleted | x fw-sequential |", "|---|---|---|---|---|"]
            for r in rows:
                ratio = (
                    f"{r[f'{corpus}_rtf'] / peer[f'{corpus}_rtf']:.2f}x" if peer and peer.get(f"{corpus}_rtf") else ""
                )
                table.append(
                    f"| {r['system']} | {r.get(f'{corpus}_rtf', '')} | {r[f'{corpus}_wer']:.4f} | "
                    f"{r.get(f'{corpus}_deleted', 0):.2%} | {ratio} |"
                )
            out.append("\n".join(table) + "\n")
        return "\n".join(out)
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        return _rows(data["rows"])
    if isinstance(data, list):
        return _rows(data)
    if isinstance(data, dict) and isinstance(data.get("results"), dict):
        return _rows([{"system": k, **v} for k, v in data["results"].items()])
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        return _rows([{"system": k, **v} for k, v in data.items()])
    if isinstance(data, dict):
        return _rows([{"measure": k, "value": v} for k, v in data.items() if k not in ("date", "cpu", "commit")])
    return ""


def _rows(rows: list) -> str:
    rows = [r for r in rows if isinstance(r, dict)]
    columns = [c for c in dict.fromkeys(k for r in rows for k in r) if all(_scalar(r.get(c)) for r in rows)]
    if not rows or not columns:
        return ""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _scalar(value) -> bool:
    return (
        value is None
        or isinstance(value, (str, int, float, bool))
        or (isinstance(value, (list, dict)) and len(json.dumps(value)) <= 60)
    )


def error_messages() -> str:
    """Every message asrflow raises with (read from the source: each names the problem and what to do), by module,
    with the exception it comes in: the hierarchy's status (errors.py, server/errors.py) says how each edge shows it."""
    import ast

    out = []
    for path in sorted((ROOT / "src" / "asrflow").rglob("*.py")):
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                message = next((_text(a) for a in node.exc.args if _text(a)), None)
                if message:
                    found.append((node.lineno, ast.unparse(node.exc.func), message))
            elif isinstance(node, ast.Call) and path.name.startswith("realtime") and _sent(node):
                found.append((node.lineno, *_sent(node)))
        if found:
            module = path.relative_to(ROOT / "src").with_suffix("").as_posix().replace("/", ".")
            first = "exception, or realtime event" if path.name.startswith("realtime") else "exception"
            rows = [f"| {first} | message (`{{…}}`: filled in when raised) |", "|---|---|"]
            once = dict.fromkeys((kind, message) for _, kind, message in sorted(found))
            rows += [f"| `{kind}` | {_cell(message)} |" for kind, message in once]
            out += [f"## {module}", "", "\n".join(rows), ""]
    return "\n".join(out)


# what a realtime session sends its client without raising: an `error` event (error, error_event: message, param,
# code) or a turn's failed event (fail_turn: item, message, code), the session going on: name -> (kind, the
# message's and the code's positions)
SENDERS = {"error": ("error event", 0, 2), "error_event": ("error event", 0, 2), "fail_turn": ("failed event", 1, 2)}


def _sent(node) -> tuple[str, str] | None:
    """The event and message of a realtime send: (kind with its code, message), or None if `node` is none."""
    import ast

    func = node.func
    if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) in ("self", "session"):
        name = func.attr  # a session's own error(), not a logger's
    else:
        name = getattr(func, "id", None)
    if name not in SENDERS or len(node.args) <= SENDERS[name][1]:
        return None
    kind, at, code_at = SENDERS[name]
    message = _text(node.args[at])
    codes = [k.value for k in node.keywords if k.arg == "code"] + node.args[code_at : code_at + 1]
    if not message or (codes and not isinstance(codes[0], ast.Constant)):
        return None  # no text of its own, or a message its caller composes (listed at the caller)
    code = codes[0].value if codes else None
    return (f"{kind}: {code}" if code else kind), message


def _text(node) -> str | None:
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 15:
        return node.value.replace("\n", " ")
    if isinstance(node, ast.JoinedStr):
        parts = [v.value if isinstance(v, ast.Constant) else "{…}" for v in node.values]
        return "".join(parts).replace("\n", " ") if sum(len(p) for p in parts) > 15 else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "..." + "..." and f"" + f""
        left, right = _text(node.left), _text(node.right)
        return (left or "{…}") + (right or "{…}") if left or right else None
    return None
