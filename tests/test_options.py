"""The one options resolver: every edge's values (text, JSON, Python) are coerced or refused by name."""

import pytest

from asrflow import InvalidOptionError, TranscribeOptions
from asrflow.options import FALLBACK_TEMPERATURES

pytestmark = pytest.mark.check  # the quick tier: make check


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "summarize"}, "task"),
        ({"beam_size": 0}, "beam_size"),
        ({"beam_size": 1_000_000_000}, "beam_size must be between 1 and 20"),
        ({"beam_size": "five"}, "beam_size cannot be 'five'"),
        ({"beam_size": 2.5}, "beam_size"),
        ({"beam_size": True}, "beam_size"),
        ({"batch_size": 10_000}, "batch_size"),
        ({"temperature": "hot"}, "temperature cannot be 'hot'"),
        ({"temperature": [0.0, 1.5]}, "temperature"),
        ({"temperature": [0.0] * 30}, "at most 6 values"),
        ({"language": 5}, "language"),
        ({"language": "xx"}, "not a Whisper language code"),
        ({"initial_prompt": {"a": 1}}, "initial_prompt"),
        ({"chunk_length_s": None}, "chunk_length_s"),
        ({"chunk_length_s": 60}, "chunk_length_s"),
        ({"chunk_length_s": "nan"}, "chunk_length_s"),
        ({"word_timestamps": "maybe"}, "word_timestamps"),
        ({"stride_length_s": [15, 10], "chunk_length_s": 20}, "stride_length_s"),
        ({"vad_threshold": 1.5}, "vad_threshold must be between 0.01 and 0.99"),
        ({"vad_min_silence_duration_ms": "long"}, "vad_min_silence_duration_ms cannot be 'long'"),
        ({"vad_speech_pad_ms": -1}, "vad_speech_pad_ms"),
        ({"colour": "blue"}, "unknown option"),
        ({"known_speakers": {"ann": "ann.wav"}}, "turn diarize on"),
        ({"diarize": True, "known_speakers": ["ann"]}, "NAME=CLIP"),
        ({"diarize": True, "known_speakers": ["ann=a.wav", "ann=b.wav"]}, "distinct names"),
        ({"diarize": True, "known_speakers": {f"s{k}": "a.wav" for k in range(9)}}, "at most 8"),
        ({"diarize": True, "known_speakers": {"": "a.wav"}}, "1 to 64 printable"),
        ({"diarize": True, "known_speakers": {"ann": 5}}, "known_speakers cannot be"),
        ({"diarize": True, "known_speakers": "ann=a.wav"}, "known_speakers cannot be"),
    ],
)
def test_invalid_options_name_the_problem(changes, message):
    with pytest.raises(InvalidOptionError, match=message):
        TranscribeOptions().resolve(changes)


def test_text_from_forms_and_flags_is_converted():
    options = TranscribeOptions().resolve(
        {
            "beam_size": "3",
            "temperature": "0,0.5",
            "word_timestamps": "true",
            "vad_filter": 1,
            "language": " EN ",
            "initial_prompt": "",
            "stride_length_s": "4",
            "log_prob_threshold": "",
            "batch_size": 4.0,
        }
    )
    assert options.beam_size == 3 and options.batch_size == 4
    assert options.temperature == (0.0, 0.5)
    assert options.word_timestamps is True and options.vad_filter is True
    assert options.language == "en" and options.initial_prompt is None
    assert options.stride_length_s == (4.0, 4.0) and options.log_prob_threshold is None


def test_whisper_fallback_is_the_default_and_saved_options_round_trip():
    options = TranscribeOptions()
    assert options.temperature == FALLBACK_TEMPERATURES
    assert (options.compression_ratio_threshold, options.log_prob_threshold, options.no_speech_threshold) == (
        2.4,
        -1.0,
        0.6,
    )
    assert options.condition_on_previous_text is True
    saved = TranscribeOptions().resolve(temperature=0.2, language="de", stride_length_s=[5, 3]).to_dict()
    assert TranscribeOptions.from_dict(saved) == TranscribeOptions().resolve(
        temperature=[0.2], language="de", stride_length_s=(5, 3)
    )


def test_precedence_saved_then_edge_then_call(ct2_transcriber):
    from asrflow.transcriber import Transcriber

    saved = TranscribeOptions().resolve(word_timestamps=True, beam_size=2)
    model = Transcriber(ct2_transcriber.backend, ct2_transcriber.source, saved)
    edge = model.resolve({"beam_size": "4"})  # a server or CLI flag
    assert (edge.word_timestamps, edge.beam_size) == (True, 4)
    assert model.resolve({"word_timestamps": False}, edge).beam_size == 4  # one call on top of the edge's
    with pytest.raises(InvalidOptionError, match="English-only"):
        model.resolve({"language": "de"})


def test_a_prompt_keeps_only_what_whisper_reads():
    """Whisper reads a prompt's last 223 tokens, and faster-whisper hotwords' first 223: a megabyte of either is
    cut to the end that is read before it is tokenized."""
    from asrflow.options import PROMPT_CHARS

    options = TranscribeOptions().resolve(
        {"initial_prompt": "x" * 2**20 + " the end", "hotwords": "bus " + "y" * 2**20}
    )
    assert len(options.initial_prompt) == len(options.hotwords) == PROMPT_CHARS
    assert options.initial_prompt.endswith("x the end") and options.hotwords.startswith("bus y")


def test_each_option_is_declared_once_and_the_edges_are_derived_from_it():
    """The CLI's flags, MLflow's params and the OpenAI fields come from each option's declaration (options.py):
    nothing restates a name, a type, a default or a help text."""
    import dataclasses

    from asrflow.cli_audio import decoding_flags
    from asrflow.flavor import model_signature
    from asrflow.scoring import OUTPUT_PARAMS
    from asrflow.server.openai_form import FIELDS

    declared = {f.name: f for f in dataclasses.fields(TranscribeOptions)}
    assert all({"convert", "expected", "help", "cli", "openai"} <= set(f.metadata) for f in declared.values())
    flags = decoding_flags()
    assert sorted(option for option, _, _ in flags.values()) == sorted(
        name for name, f in declared.items() if f.metadata["cli"] is not None
    )
    for option, kind, info in flags.values():
        assert info.help.startswith(declared[option].metadata["help"]) and info.default is None
        assert (kind == bool | None) == (declared[option].type == "bool")
    assert flags["beam_size"][2].help.endswith("(default 5)") and flags["vad"][0] == "vad_filter"
    params = {p.name: p for p in model_signature().params}
    assert list(params) == [*(n for n, f in declared.items() if f.metadata["params"]), *OUTPUT_PARAMS]
    assert "known_speakers" not in params and flags["speaker"][:2] == ("known_speakers", list[str] | None)
    assert params["temperature"].dtype.name == "double" and params["temperature"].shape == (-1,)
    assert params["num_speakers"].dtype.name == "long" and params["diarize"].dtype.name == "boolean"
    assert set(TranscribeOptions.openai_fields()) <= FIELDS
    assert TranscribeOptions.openai_fields()["prompt"] == "initial_prompt"


def test_known_speakers_are_an_option_that_no_network_edge_can_point_at_a_file(tmp_path):
    """Known speakers (name -> a clip of that voice) are an option like any other: the library, the CLI's
    repeated --speaker NAME=CLIP, batch, and OpenAI's known_speaker_* fields (as decoded bytes). A clip may be a
    path, so they are no MLflow param: /invocations and stock `mlflow models serve` refuse them by name rather
    than read a file of the server's; and a model does not save them."""
    import numpy as np

    from asrflow.flavor import save_model
    from asrflow.scoring import parse_params
    from asrflow.transcriber import Transcriber

    options = TranscribeOptions(diarize=True, known_speakers=["ann=ann.wav", "bo=/clips/bo.ogg"])
    assert options.known_speakers == (("ann", "ann.wav"), ("bo", "/clips/bo.ogg"))
    assert options.resolve(known_speakers={"ann": b"RIFF..."}).known_speakers == (("ann", b"RIFF..."),)
    samples = options.resolve(known_speakers={"ann": np.zeros(16000, np.float32)})
    assert samples == options  # compared without the clips (samples have no plain equality)
    saved = samples.to_dict()["known_speakers"]
    assert list(saved) == ["ann"] and saved["ann"].startswith("sha256:")  # identifies, as a journal needs
    assert options.to_dict()["known_speakers"] == {"ann": "ann.wav", "bo": "/clips/bo.ogg"}
    transcriber = Transcriber(backend=None, source=None)
    with pytest.raises(InvalidOptionError, match="unknown param.*known_speakers"):
        parse_params(transcriber, {"diarize": True, "known_speakers": {"ann": "/etc/passwd"}})
    with pytest.raises(InvalidOptionError, match="a model does not carry them"):
        save_model(tmp_path / "model", options=options)
    assert not (tmp_path / "model").exists()
    # nor read from a model's files: a path there would have a server open it (review)
    assert "known_speakers" not in TranscribeOptions().to_dict()  # what a model saves
    with pytest.raises(InvalidOptionError, match="which a model does not carry"):
        TranscribeOptions.from_dict({"diarize": True, "known_speakers": {"y": "/etc/hostname"}})


def test_a_known_speakers_clip_is_decoded_as_any_audio_is():
    """Samples too go through decode_audio: stereo or int16 arrays are downmixed and scaled (a stereo array
    given as it was once had the voice encoder try to allocate gigabytes), and the 30 s bound holds (review)."""
    import numpy as np

    from asrflow.errors import AudioDecodeError
    from asrflow.transcriber import known_voice

    stereo = (np.random.default_rng(0).standard_normal((2, 16000)) * 3000).astype(np.int16)
    voice = known_voice("ann", stereo)
    assert voice.shape == (16000,) and voice.dtype == np.float32 and np.abs(voice).max() <= 1.0
    with pytest.raises(AudioDecodeError, match="known speaker 'ann': the clip lasts longer than 30 s"):
        known_voice("ann", np.zeros(31 * 16000, np.float32))
    with pytest.raises(AudioDecodeError, match="known speaker 'ann': .*NaN"):
        known_voice("ann", np.full(16000, np.nan, np.float32))
