"""`make bench`: live transcription's latency and accuracy, with the openai client's realtime connection, alone
and beside file traffic (issue 39: live first).

A real `asrflow serve bundled:tiny.en`; each session sends dev clips at real time (100 ms pieces of 24 kHz PCM16,
1.5 s of silence between clips) with server_vad turn detection. Per turn: the first delta's delay after the
clip's first audio was sent, and `completed`'s delay after its last audio was sent; the WER of the completed
turns against the references and against offline transcription of the same clips by the same server.

Runs, in one server: 1 session; 4 sessions; 4 sessions beside 8 file clients (each sending dev clips one after
another with the openai client); the same 8 file clients alone for as long. The file clients' throughput (audio
seconds answered per second) with the sessions is compared with theirs alone. Targets (issue 39): first delta
p50 <= 1.0 s, completed p95 <= 1.5 s, file throughput >= 0.8x. Writes bench/results/realtime.json.
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
FILE_CLIENTS = int(os.environ.get("BENCH_FILE_CLIENTS", "8"))
RUNS = [(1, 0), (4, 0), (4, FILE_CLIENTS)]  # (sessions, file clients); then the file clients alone
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
    """One file client: dev clips one after another until `stop`; each answer's (time, audio seconds)."""
    import openai

    from asrflow import decode_audio

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    clips = [(clip, len(decode_audio(clip)) / 16000) for clip in sorted(DATA.glob("dev01*"))]
    while not stop.is_set():
        for clip, seconds in clips:
            try:
                client.audio.transcriptions.create(model="whisper-1", file=clip.open("rb"), language="en")
                answered.append((time.perf_counter(), seconds))
            except openai.OpenAIError as e:
                errors.append(str(e))
            if stop.is_set():
                return


def throughput(answered: list, started: float, ended: float) -> float:
    """Audio seconds answered per wall second, of the answers within [started, ended]."""
    return round(sum(s for t, s in answered if started <= t <= ended) / (ended - started), 2)


def run(url: str, clips: list, sessions: int, file_clients: int, seconds: float | None = None) -> dict:
    """`sessions` realtime sessions (their clips), beside `file_clients` file clients; without sessions the file
    clients run for `seconds`."""
    turns, errors, answered, done = [], [], [], threading.Event()
    mine = [clips[(i * CLIPS + k) % len(clips)] for i in range(sessions) for k in range(CLIPS)]
    threads = [
        threading.Thread(target=session, args=(url, mine[i * CLIPS : (i + 1) * CLIPS], turns, errors, i + 1))
        for i in range(sessions)
    ]
    files = [threading.Thread(target=files_alongside, args=(url, done, errors, answered)) for _ in range(file_clients)]
    started = time.perf_counter()
    for t in files + threads:
        t.start()
    if threads:
        for t in threads:
            t.join()
    else:
        time.sleep(seconds)
    ended = time.perf_counter()
    done.set()
    for t in files:
        t.join()
    return {
        "sessions": sessions,
        "file_clients": file_clients,
        "seconds": round(ended - started, 1),
        "file_throughput": throughput(answered, started, ended) if file_clients else None,
        "errors": len(errors),
        "error_messages": errors[:5],
        "turns": turns,
    }


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
        for sessions, file_clients in RUNS:
            rows.append(run(url, clips, sessions, file_clients))
        rows.append(run(url, clips, 0, FILE_CLIENTS, seconds=rows[-1]["seconds"]))  # the same file load alone
        for r in rows:
            turns = r.pop("turns")
            r |= figures(turns, references, offline) if turns else {}
            r["turn_rows"] = turns
    finally:
        stop(process)
    print(
        f"bench/realtime.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, bundled:tiny.en, {CLIPS} dev clips "
        f"a session sent at real time, server_vad (silence 500 ms); file clients send dev clips one after another"
    )
    print(
        f"{'sessions':>8} {'files':>6} {'turns':>6} {'first delta p50':>16} {'completed p95':>14} {'WER live':>9} "
        f"{'WER offline':>12} {'file audio s/s':>15} {'errors':>7}"
    )
    for r in rows:
        live = r["sessions"] > 0
        print(
            f"{r['sessions']:>8} {r['file_clients']:>6} {r.get('turns', 0):>6} "
            f"{(str(r['first_delta_p50_s']) + ' s') if live else '-':>16} "
            f"{(str(r['completed_p95_s']) + ' s') if live else '-':>14} "
            f"{r['wer_live'] if live else '-':>9} {r['wer_offline'] if live else '-':>12} "
            f"{r['file_throughput'] if r['file_throughput'] is not None else '-':>15} {r['errors']:>7}"
        )
    both, alone = rows[2], rows[3]
    ratio = both["file_throughput"] / alone["file_throughput"] if alone["file_throughput"] else float("nan")
    print(
        f"\nwith {both['sessions']} sessions beside {both['file_clients']} file clients: first delta p50 "
        f"{both['first_delta_p50_s']} s (target <= 1.0), completed p95 {both['completed_p95_s']} s (target <= 1.5), "
        f"file throughput {ratio:.2f}x of the same file load alone (target >= 0.8)"
    )
    import stamp

    stamp.write("realtime", rows)


if __name__ == "__main__":
    main()
