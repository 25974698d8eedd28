"""`make bench`: live transcription's latency and accuracy, with the openai client's realtime connection.

A real `asrflow serve bundled:tiny.en`; each session sends dev clips at real time (100 ms pieces of 24 kHz PCM16,
1.5 s of silence between clips) with server_vad turn detection. Per turn: the first delta's delay after the
clip's first audio was sent, and `completed`'s delay after its last audio was sent; the WER of the completed
turns against the references and against offline transcription of the same clips by the same server. With 4
sessions, a client sends file requests alongside. Writes bench/results/realtime.json.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DATA = ROOT / "tests" / "data"
CLIPS = int(os.environ.get("BENCH_REALTIME_CLIPS", "5"))  # per session
SESSIONS = [int(n) for n in os.environ.get("BENCH_REALTIME_SESSIONS", "1,4").split(",")]
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


def session(url: str, clips: list[Path], out: list, errors: list, number: int = 1) -> None:
    import openai
    from test_realtime import pcm

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    sent: list[tuple[float, float]] = []
    events: list[tuple[float, object]] = []
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"language": "en"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.5,
                            "prefix_padding_ms": 300,
                            "silence_duration_ms": 500,
                        },
                    }
                },
            }
        )

        def receive():
            for event in connection:
                events.append((time.perf_counter(), event))
                if sum(e.type == COMPLETED for _, e in events) == len(clips) or len(errors) > 50:
                    return

        receiver = threading.Thread(target=receive)
        receiver.start()
        step, silence = 24000 * 2 // 10, bytes(24000 * 2 * 3 // 2)
        for clip in clips + [None]:
            for audio in [silence] if clip is None else [silence, pcm(clip)]:
                start = time.perf_counter()
                for i in range(0, len(audio), step):
                    connection.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + step]).decode())
                    time.sleep(max(0.0, start + (i + step) / (24000 * 2) - time.perf_counter()))  # real time
                if audio is not silence:
                    sent.append((start, time.perf_counter()))
        receiver.join(timeout=120)
    errors += [e.error.message for _, e in events if e.type == "error"]
    committed = [e.item_id for _, e in events if e.type == "input_audio_buffer.committed"]
    for clip, (start, end), item in zip(clips, sent, committed):
        first = next((t for t, e in events if e.type == DELTA and e.item_id == item), None)
        done = next((t, e.transcript) for t, e in events if e.type == COMPLETED and e.item_id == item)
        out.append(
            {
                "session": number,
                "clip": clip.name,
                "first_delta_s": None if first is None else round(first - start, 3),
                "completed_s": round(done[0] - end, 3),
                "text": done[1],
            }
        )


def files_alongside(url: str, stop: threading.Event, errors: list, answered: list) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    clips = sorted(DATA.glob("dev01*"))
    while not stop.is_set():
        for clip in clips:
            try:
                client.audio.transcriptions.create(model="whisper-1", file=clip.open("rb"))
                answered.append(clip.name)
            except openai.OpenAIError as e:
                errors.append(str(e))
            if stop.is_set():
                return


def figures(turns: list[dict], references: dict, offline: dict) -> dict:
    """Latency and accuracy of some turns (a session's, or all of a run's)."""
    from asrflow.metrics import word_error_rate

    firsts = [t["first_delta_s"] for t in turns if t["first_delta_s"] is not None]
    return {
        "turns": len(turns),
        "first_delta_p50_s": round(statistics.median(firsts), 2) if firsts else None,
        "turns_with_delta_before_completed": len(firsts),
        "completed_p50_s": round(statistics.median(t["completed_s"] for t in turns), 2),
        "completed_p95_s": round(percentile([t["completed_s"] for t in turns], 95), 2),
        "wer_live": round(word_error_rate([references[t["clip"]] for t in turns], [t["text"] for t in turns]), 4),
        "wer_offline": round(
            word_error_rate([references[t["clip"]] for t in turns], [offline[t["clip"]] for t in turns]), 4
        ),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    import openai
    from conftest import BIN, environment, free_port, start, stop

    references = {
        json.loads(line)["audio"]: json.loads(line)["text"]
        for line in (DATA / "manifest.jsonl").read_text().splitlines()
    }
    clips = sorted(DATA.glob("dev0*"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start([BIN / "asrflow", "serve", "bundled:tiny.en", "--port", str(port)], f"{url}/ready", environment())
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        offline = {
            c.name: client.audio.transcriptions.create(model="whisper-1", file=c.open("rb"), language="en").text
            for c in clips
        }
        rows = []
        for n in SESSIONS:
            turns, errors, answered, done = [], [], [], threading.Event()
            mine = [clips[(i * CLIPS + k) % len(clips)] for i in range(n) for k in range(CLIPS)]
            threads = [
                threading.Thread(target=session, args=(url, mine[i * CLIPS : (i + 1) * CLIPS], turns, errors, i + 1))
                for i in range(n)
            ]
            files = threading.Thread(target=files_alongside, args=(url, done, errors, answered)) if n > 1 else None
            for t in threads + ([files] if files else []):
                t.start()
            for t in threads:
                t.join()
            done.set()
            if files:
                files.join()
            rows.append(
                {"sessions": n}
                | figures(turns, references, offline)
                | {
                    "files_answered": len(answered),
                    "errors": len(errors),
                    "error_messages": errors[:5],
                    "turn_rows": turns,
                    "per_session": [
                        figures([t for t in turns if t["session"] == k], references, offline) for k in range(1, n + 1)
                    ]
                    if n > 1
                    else [],
                }
            )
    finally:
        stop(process)
    print(
        f"bench/realtime.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, bundled:tiny.en, {CLIPS} dev clips "
        "a session sent at real time, server_vad (silence 500 ms)"
    )
    print(
        f"{'sessions':>8} {'turns':>6} {'first delta p50':>16} {'completed p50':>14} {'completed p95':>14} {'WER live':>9} "
        f"{'WER offline':>12} {'files':>6} {'errors':>7}"
    )
    for r in rows:
        print(
            f"{r['sessions']:>8} {r['turns']:>6} {str(r['first_delta_p50_s']) + ' s':>16} {r['completed_p50_s']:>12} s "
            f"{r['completed_p95_s']:>12} s {r['wer_live']:>9.4f} {r['wer_offline']:>12.4f} {r['files_answered']:>6} {r['errors']:>7}"
        )
        for k, s in enumerate(r["per_session"], 1):
            print(
                f"{'#' + str(k):>8} {s['turns']:>6} {str(s['first_delta_p50_s']) + ' s':>16} {s['completed_p50_s']:>12} s "
                f"{s['completed_p95_s']:>12} s {s['wer_live']:>9.4f} {s['wer_offline']:>12.4f}"
            )
    (ROOT / "bench" / "results" / "realtime.json").write_text(
        json.dumps({"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
