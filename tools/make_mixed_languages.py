"""A mixed-language test file from per-language sentences: one turn per sentence, 1 s of silence between turns.

usage: .venv/bin/python tools/make_mixed_languages.py TURNS_DIR OUT.ogg
TURNS_DIR holds ../shared/tools/make_tts_corpus.py's output (its manifest.jsonl: audio, text, voice); writes
OUT.ogg and OUT.jsonl (one turn a line: start, end, language, text)."""

import json
import sys
from pathlib import Path

import numpy as np

from asrflow.audio import decode_audio
from asrflow.encoding import encode_audio

turns_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
pause = np.zeros(16000, np.float32)
pieces, turns, t = [], [], 0.0
for row in map(json.loads, (turns_dir / "manifest.jsonl").read_text().splitlines()):
    samples = decode_audio(turns_dir / row["audio"])
    turns.append(
        {
            "start": round(t, 3),
            "end": round(t + len(samples) / 16000, 3),
            "language": row["voice"].split("-")[0].split("+")[0],
            "text": row["text"],
        }
    )
    pieces += [samples, pause]
    t += (len(samples) + len(pause)) / 16000
encode_audio(np.concatenate(pieces), "ogg", bitrate=32000, file=str(out))
out.with_suffix(".jsonl").write_text("".join(json.dumps(turn, ensure_ascii=False) + "\n" for turn in turns))
