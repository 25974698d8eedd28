import io

import numpy as np
import pytest
from conftest import DATA, SAMPLE

from asrflow import AudioDecodeError, decode_audio

pytestmark = pytest.mark.check  # the quick tier: make check


@pytest.mark.parametrize("name", ["dev000.wav", "dev001.mp3", "dev002.flac", "dev003.ogg"])
def test_decodes_each_format_to_16k_mono_float32(name):
    samples = decode_audio(DATA / name)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert 4.0 < len(samples) / 16000 < 8.0
    assert 0.01 < np.abs(samples).max() <= 1.0


def test_bytes_path_and_file_objects_agree():
    data = SAMPLE.read_bytes()
    from_path = decode_audio(SAMPLE)
    assert np.array_equal(decode_audio(data), from_path)
    assert np.array_equal(decode_audio(io.BytesIO(data)), from_path)
    assert np.array_equal(decode_audio(str(SAMPLE)), from_path)


def test_arrays_are_resampled_and_downmixed():
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    samples = decode_audio(stereo, sample_rate=44100)
    assert abs(len(samples) - 16000) < 50
    assert decode_audio((stereo[0] * 32767).astype(np.int16), sample_rate=44100).max() > 0.9


def test_m4a_and_webm_decode():
    from asrflow.encoding import encode_audio

    source = decode_audio(DATA / "dev000.wav")
    for format in ("mp4", "webm", "ogg"):
        assert abs(len(decode_audio(encode_audio(source, format))) - len(source)) < 0.2 * 16000


BAD_INPUTS = {
    "empty bytes": (b"", "empty"),
    "text": (b"this is certainly not audio " * 20, "not audio"),
    "truncated header": (SAMPLE.read_bytes()[:40], "not audio"),
    "truncated wav": ((DATA / "dev000.wav").read_bytes()[:60000], "truncated"),
    "missing file": ("/nonexistent/x.wav", "no audio file"),
    "url while disabled": ("https://example.com/a.wav", "URL inputs are disabled"),
    "nan samples": (np.array([0.1, np.nan], dtype=np.float32), "NaN"),
    "empty array": (np.zeros(0, dtype=np.float32), "empty"),
    "wrong type": (12345, "cannot read audio"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_a_clear_error(name):
    value, message = BAD_INPUTS[name]
    with pytest.raises(AudioDecodeError, match=message):
        decode_audio(value)


def test_empty_and_text_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.mp3").write_text("hello")
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioDecodeError, match="notes.mp3"):
        decode_audio(tmp_path / "notes.mp3")


def test_silence_is_found_without_copying_hours_of_audio():
    from asrflow.vad import is_silent

    quiet = np.zeros(16000 * 3600, np.float32)
    assert is_silent(quiet) and is_silent(quiet[:100])
    quiet[16000 * 3599] = 0.5  # one click in the last second of an hour
    assert not is_silent(quiet)


def test_check_audio_fails_like_decoding_from_the_header_alone(tmp_path):
    from asrflow.audio import check_audio

    assert abs(check_audio(SAMPLE) - 11.0) < 0.1
    notes = tmp_path / "notes.mp3"
    notes.write_text("not audio at all")
    for path, message in ((tmp_path / "missing.wav", "no audio file"), (notes, "not audio in a format asrflow reads")):
        with pytest.raises(AudioDecodeError, match=message):
            check_audio(path)
    with pytest.raises(AudioDecodeError, match="URL inputs are disabled"):
        check_audio("https://example.com/a.mp3")


@pytest.mark.parametrize("size", [0, 0x7FFFFFF0, 0xFFFFFFFF])
def test_a_wav_written_as_streamed_decodes_whole(size):
    """Writers that cannot seek back (pipes, recorders) leave the data size open: 0, or a placeholder near 2 or
    4 GiB. Such a WAV holds what its bytes hold; only a real size larger than the bytes is a truncated file."""
    from asrflow.audio import declared_seconds

    data = bytearray((DATA / "dev000.wav").read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = size.to_bytes(4, "little")
    whole = decode_audio(DATA / "dev000.wav")
    assert np.array_equal(decode_audio(bytes(data)), whole)
    assert declared_seconds(bytes(data)) == pytest.approx(len(whole) / 16000, abs=0.01)
