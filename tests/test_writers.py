import json
import re

import pytest

from asrflow import Segment, Transcript, Word
from asrflow.writers import WRITERS, format_timestamp, write_file

pytestmark = pytest.mark.check  # the quick tier: make check

SRT_BLOCK = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)$")


def parse_srt(text: str):
    """Strict SRT parse: numbered from 1, HH:MM:SS,mmm, cues in order, start <= end."""
    cues = []
    for i, block in enumerate(text.strip().split("\n\n"), start=1):
        match = SRT_BLOCK.match(block)
        assert match, f"bad SRT block: {block!r}"
        assert int(match[1]) == i
        cues.append((match[2], match[3], match[4]))
    assert all(a <= b for a, b, _ in cues)
    assert [c[0] for c in cues] == sorted(c[0] for c in cues)
    return cues


TRANSCRIPT = Transcript(
    text="Hello there. Second part.",
    language="en",
    language_probability=1.0,
    duration=3725.5,
    segments=[
        Segment(0.0, 1.5, "Hello there.", [Word(0.0, 0.6, "Hello", 0.9), Word(0.7, 1.5, "there.", 0.8)]),
        Segment(3661.25, 3725.5, "Second part."),
    ],
)


def test_timestamps():
    assert format_timestamp(3661.25) == "01:01:01,250"
    assert format_timestamp(0.0006) == "00:00:00,001"
    assert format_timestamp(59.9999, ".") == "00:01:00.000"


def test_srt_is_valid():
    cues = parse_srt(WRITERS["srt"](TRANSCRIPT))
    assert cues == [("00:00:00,000", "00:00:01,500", "Hello there."), ("01:01:01,250", "01:02:05,500", "Second part.")]


def test_vtt_is_valid():
    text = WRITERS["vtt"](TRANSCRIPT)
    assert text.startswith("WEBVTT\n\n")
    assert "01:01:01.250 --> 01:02:05.500\nSecond part." in text


def test_txt_tsv_json():
    assert WRITERS["txt"](TRANSCRIPT) == "Hello there. Second part.\n"
    assert WRITERS["tsv"](TRANSCRIPT).splitlines()[:2] == [
        "start\tend\ttext\tlanguage\tspeaker",
        "0\t1500\tHello there.\t\t",
    ]
    assert Transcript.from_dict(json.loads(WRITERS["json"](TRANSCRIPT))) == TRANSCRIPT


def test_speakers_and_languages_in_every_format():
    from dataclasses import replace

    said = replace(
        TRANSCRIPT,
        segments=[
            replace(s, speaker=who, language=lang) for s, who, lang in zip(TRANSCRIPT.segments, "AB", ("en", "de"))
        ],
    )
    assert WRITERS["txt"](said) == "[A] Hello there.\n[B] Second part.\n"
    assert [c[2] for c in parse_srt(WRITERS["srt"](said))] == ["[A] Hello there.", "[B] Second part."]
    assert "\n<v A>Hello there.\n" in WRITERS["vtt"](said)  # WebVTT's voice span; the file's language untagged
    assert "\n<v B><lang de>Second part.</lang>\n" in WRITERS["vtt"](said)  # another language: a language span
    assert WRITERS["tsv"](said).splitlines()[2] == "3661250\t3725500\tSecond part.\tde\tB"
    assert [json.loads(line)["speaker"] for line in WRITERS["jsonl"](said).splitlines()] == ["A", "B"]
    assert Transcript.from_dict(json.loads(WRITERS["json"](said))) == said


def test_write_file_leaves_no_temp_file(tmp_path):
    path = write_file(TRANSCRIPT, tmp_path / "sub" / "a.srt", "srt")
    assert path.read_text().startswith("1\n")
    assert [p.name for p in path.parent.iterdir()] == ["a.srt"]


def test_every_incremental_format_equals_its_whole_writer_and_each_prefix_is_valid():
    import io

    from asrflow.writers import FORMATS, write_incrementally

    for name, spec in FORMATS.items():
        out = io.StringIO()
        assert write_incrementally(name, TRANSCRIPT.segments, out) == 2
        assert out.getvalue() + spec.tail(TRANSCRIPT) == WRITERS[name](TRANSCRIPT), name
    one = io.StringIO()
    write_incrementally("srt", TRANSCRIPT.segments[:1], one)
    assert parse_srt(one.getvalue()) == [("00:00:00,000", "00:00:01,500", "Hello there.")]
    lines = WRITERS["jsonl"](TRANSCRIPT).splitlines()
    assert [
        Segment(**{**json.loads(x), "words": [Word(**w) for w in json.loads(x)["words"]]}) for x in lines
    ] == TRANSCRIPT.segments
