"""Canaries: the internals of other packages that asrflow leans on (issue 38), each checked where it lives, so that a
release that moves one fails here, naming it and what asrflow needs of it, instead of silently costing accuracy."""

import inspect

import pytest

SEAMS = {
    "BatchedInferencePipeline.generate_segment_batched encodes through self.model.encode": (
        "faster_whisper.transcribe:BatchedInferencePipeline.generate_segment_batched",
        "self.model.encode(",
        "the batched pipeline's model copy has TrimmedEncoder as its encode (backends/ctranslate2.py, encoder.py)",
    ),
    "BatchedInferencePipeline.generate_segment_batched decodes through self.model.model.generate": (
        "faster_whisper.transcribe:BatchedInferencePipeline.generate_segment_batched",
        "self.model.model.generate(",
        "PerItemPrompts stands in for WhisperModel.model and gives each item its own prompt (backends/prompts.py)",
    ),
    "BatchedInferencePipeline.transcribe computes features through self.model.feature_extractor": (
        "faster_whisper.transcribe:BatchedInferencePipeline.transcribe",
        "self.model.feature_extractor(",
        "SilencePaddedExtractor marks a region's frames for padding with silence (backends/features.py)",
    ),
    "BatchedInferencePipeline.transcribe pads each region with pad_or_trim": (
        "faster_whisper.transcribe:BatchedInferencePipeline.transcribe",
        "pad_or_trim(",
        "a region's frames go through pad_or_trim, whose np.pad SilencePadded catches (backends/features.py)",
    ),
    "pad_or_trim pads with np.pad": (
        "faster_whisper.audio:pad_or_trim",
        "np.pad(",
        "SilencePadded pads with the spectrogram's floor, not zeros, by catching np.pad (the fast path's dropped "
        + "last words of a window; README, Performance)",
    ),
    "WhisperModel.generate_segments encodes through self.encode": (
        "faster_whisper.transcribe:WhisperModel.generate_segments",
        "self.encode(",
        "the sequential decoder's copy has TrimmedEncoder as its encode (backends/ctranslate2.py)",
    ),
    "WhisperModel.transcribe computes features through self.feature_extractor": (
        "faster_whisper.transcribe:WhisperModel.transcribe",
        "self.feature_extractor(",
        "WindowedExtractor computes the spectrogram a window at a time: bounded memory (backends/features.py)",
    ),
    "transformers' beam search reorders the cache through the model's _reorder_cache": (
        "transformers.generation.utils:GenerationMixin._beam_search",
        "self._reorder_cache(",
        "the transformers backend's beam search skips the cross-attention copy through this hook, 1.75x "
        + "(backends/transformers.py)",
    ),
    "Starlette's multipart parser says 'maximum size' when a part is over its limit": (
        "starlette.formparsers:MultiPartParser",
        "maximum size",
        "the server tells the part limit (a 413) from a malformed form (a 400) by it (server/openai_audio.py)",
    ),
}


def source_of(target: str) -> str:
    import importlib

    module, _, path = target.partition(":")
    obj = importlib.import_module(module)
    for name in path.split("."):
        obj = getattr(obj, name, None)
        assert obj is not None, f"{target} is gone"
    return inspect.getsource(obj)


@pytest.mark.check
@pytest.mark.parametrize("seam", list(SEAMS))
def test_the_internals_asrflow_leans_on_are_where_it_expects_them(seam):
    target, needle, need = SEAMS[seam]
    assert needle in source_of(target), f"{target} no longer has {needle!r}: {need}. Check the seam before upgrading."


@pytest.mark.check
def test_transformers_whisper_language_names_are_where_the_server_reads_them():
    """openai_audio's verbose_json names the language as OpenAI does ("english"), from transformers' table."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert LANGUAGES["en"] == "english" and LANGUAGES["de"] == "german"
