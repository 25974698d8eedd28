"""bundled:base (multilingual): language detection and translation on both backends."""

import pytest
from conftest import DATA, loaded


@pytest.fixture(scope="module", params=["ctranslate2", "transformers"])
def base(request):
    return loaded("bundled:base", request.param)


def test_detects_the_language(base):
    """The language detected, and the text in it, whatever the search (greedy here)."""
    spanish = base.transcribe(DATA / "spanish.ogg", beam_size=1)
    german = base.transcribe(DATA / "german.mp3", beam_size=1)
    assert (spanish.language, german.language) == ("es", "de")
    assert spanish.language_probability > 0.5
    assert "familia" in spanish.text and "Berlin" in german.text


def test_translates_to_english(base):
    result = base.transcribe(DATA / "spanish.ogg", task="translate")
    assert result.language == "es"
    text = result.text.lower()
    assert "family" in text and "music" in text
