"""What every bench result records beside its figures: when, on which CPU, from which commit (docs/performance.md
shows each table with them)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> str:
    """The CPU's model and the vector instructions CTranslate2's int8 products use: they decide their rounding, so
    int8 WER moves between machines (the default compute type follows them: backends/ctranslate2.py)."""
    from asrflow.backends.ctranslate2 import VNNI, cpu_info

    info = cpu_info()
    flags = set(info.get("flags", "").split())
    return ", ".join(
        [info.get("model name") or platform.machine()]
        + [f for f in ("avx2", "avx512f", "avx512_bf16", *sorted(VNNI)) if f in flags]
    )


def commit() -> str:
    """HEAD's short hash, "+changes" when src/ differs from it; "unknown" outside a git clone."""
    try:
        git = {"cwd": ROOT, "capture_output": True, "text": True}
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, **git)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], check=False, **git)
    except OSError:
        return "unknown"
    return (head.stdout.strip() or "unknown") + ("+changes" if dirty.stdout.strip() else "")


def write(name: str, data) -> Path:
    """bench/results/NAME.json: `data` (rows as a list, or a dict of figures) with the date, CPU and commit."""
    body = {"rows": data} if isinstance(data, list) else dict(data)
    body.update(date=time.strftime("%Y-%m-%d %H:%M:%S"), cpu=cpu(), commit=commit())
    path = ROOT / "bench" / "results" / f"{name}.json"
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path
