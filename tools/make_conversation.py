"""A conversation test file from turns spoken by several voices, with its RTTM reference (who spoke when).

usage: .venv/bin/python tools/make_conversation.py TURNS_DIR OUT.ogg
TURNS_DIR holds ../shared/tools/make_tts_corpus.py's output for one of tools/conversation-*.txt (its
manifest.jsonl: audio, text, voice); writes OUT.ogg (pauses of 0.4 to 1.0 s between turns) and OUT.rttm
(one SPEAKER line a turn, the speaker named by its voice) and OUT.txt (the reference transcript)."""

import json
import sys
from pathlib import Path

import numpy as np

from asrflow.audio import decode_audio
from asrflow.encoding import encode_audio

turns_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
rng = np.random.default_rng(0)
pieces, lines, texts, t = [], [], [], 0.0
for row in map(json.loads, (turns_dir / "manifest.jsonl").read_text().splitlines()):
    samples = decode_audio(turns_dir / row["audio"])
    duration = len(samples) / 16000
    lines.append(f"SPEAKER {out.stem} 1 {t:.3f} {duration:.3f} <NA> <NA> {row['voice']} <NA> <NA>\n")
    texts.append(row["text"])
    pause = np.zeros(int(rng.uniform(0.4, 1.0) * 16000), np.float32)
    pieces += [samples, pause]
    t += (len(samples) + len(pause)) / 16000
encode_audio(np.concatenate(pieces), "ogg", bitrate=32000, file=str(out))
out.with_suffix(".rttm").write_text("".join(lines))
out.with_suffix(".txt").write_text(" ".join(texts) + "\n")
