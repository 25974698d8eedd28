"""What each option takes: the converters its declaration names (options.py), from any edge's value (text, JSON,
Python) to the option's, or an InvalidOptionError naming the problem and the fix."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from asrflow.errors import InvalidOptionError

TASKS = ("transcribe", "translate")
# Whisper's language codes (faster-whisper's list, the same in openai/whisper and transformers)
_CODES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy "
    "id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa "
    "sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue"
)
LANGUAGES = _CODES.split()
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def flag(name: str, value: Any) -> bool:
    """A true/false value from any edge (true, "true", 1, "on"...), or an error naming it."""
    try:
        return boolean(value)
    except ValueError:
        raise InvalidOptionError(f"{name} cannot be {show(value)}: expected true or false.") from None


def coerce(declared, value: Any) -> Any:
    try:
        return declared.metadata["convert"](value)
    except InvalidOptionError:
        raise
    except (TypeError, ValueError):
        raise InvalidOptionError(f"{declared.name} cannot be {show(value)}: {declared.metadata['expected']}.") from None


def identity(clip: Any) -> str:
    if isinstance(clip, str):
        return clip
    data = clip.tobytes() if isinstance(clip, np.ndarray) else bytes(clip)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise TypeError
    if isinstance(value, str):
        value = value.strip()
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


def number(value: Any) -> float:
    if isinstance(value, bool) or value is None or isinstance(value, (list, tuple, dict)):
        raise TypeError
    number = float(value.strip() if isinstance(value, str) else value)
    if not math.isfinite(number):
        raise ValueError
    return number


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise ValueError


def numbers(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split()]
    if not isinstance(value, (list, tuple)):
        value = [value]
    return tuple(number(v) for v in value)


def plain_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError
    return value or None


# Whisper reads only a prompt's last 223 tokens, and faster-whisper hotwords' first 223, never more than a few
# thousand characters: the rest cannot change a transcript, and tokenizing megabytes of it would hold the model.
PROMPT_CHARS = 8000


def prompt(value: Any) -> str | None:
    text = plain_text(value)
    return text[-PROMPT_CHARS:] if text else text


def hotwords(value: Any) -> str | None:
    text = plain_text(value)
    return text[:PROMPT_CHARS] if text else text


def ranged(convert, low: float, high: float, name: str):
    def check(value):
        number = convert(value)
        if not low <= number <= high:
            raise InvalidOptionError(f"{name} must be between {low:g} and {high:g}, not {number:g}.")
        return number

    return check


def optional(convert):
    return lambda value: None if value is None or value == "" else convert(value)


def language(value: Any) -> str | None:
    code = plain_text(value)
    if code is None:
        return None
    code = code.strip().lower()
    if code not in LANGUAGES:
        raise InvalidOptionError(
            f"language {show(value)} is not a Whisper language code: use an ISO 639-1 code such as en, de, fr, "
            "es or zh, or leave it out to detect the language."
        )
    return code


def languages(value: Any) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        return None
    codes = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(codes, (list, tuple)):
        raise TypeError
    known = {c: c.strip().lower() if isinstance(c, str) else None for c in codes}
    unknown = [c for c, code in known.items() if code not in LANGUAGES]
    if unknown:
        raise InvalidOptionError(
            f"languages: {show(unknown[0])} is not a Whisper language code: list ISO 639-1 codes such as en,de,fr."
        )
    return tuple(dict.fromkeys(known.values())) or None


def choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise InvalidOptionError(f"{name} must be one of {', '.join(choices)}, not {show(value)}.")
    return value


def task(value: Any) -> str:
    if value not in TASKS:
        raise InvalidOptionError(f"task must be one of {', '.join(TASKS)}, not {show(value)}.")
    return value


def temperatures(value: Any) -> tuple[float, ...]:
    temperatures = numbers(value)
    if not temperatures or any(not 0.0 <= t <= 1.0 for t in temperatures):
        raise InvalidOptionError(
            f"temperature must be one number or a list of numbers between 0 and 1 (the fallback sequence), "
            f"not {show(value)}."
        )
    if len(temperatures) > len(FALLBACK_TEMPERATURES):  # each is one more decode of a window: bounded
        raise InvalidOptionError(
            f"temperature takes at most {len(FALLBACK_TEMPERATURES)} values (a fallback sequence such as "
            f"{','.join(f'{t:g}' for t in FALLBACK_TEMPERATURES)}), not {len(temperatures)}."
        )
    return temperatures


def stride(value: Any) -> tuple[float, float] | None:
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):  # also MLflow's [] default
        return None
    stride = numbers(value)
    stride = stride * 2 if len(stride) == 1 else stride
    if len(stride) != 2 or any(s < 0 for s in stride):
        raise InvalidOptionError(
            f"stride_length_s must be one or two non-negative numbers of seconds, not {show(value)}."
        )
    return stride


SPEAKERS = "expected a whole number of speakers from 1 to 32"


def speakers(name: str):
    return optional(ranged(integer, 1, 32, name))


# Known speakers: OpenAI takes at most 4; each is one short clip decoded and embedded per request.
MAX_KNOWN_SPEAKERS = 8


def known_speakers(value: Any) -> tuple[tuple[str, Any], ...] | None:
    """{name: clip}, [(name, clip)] or the CLI's ["NAME=CLIP"] -> ((name, clip), ...); a clip is a file's path,
    encoded bytes or 16 kHz samples. Paths are read when the audio is transcribed, so no edge that takes input
    from a network (the server) passes text here: it decodes what it was sent and passes bytes or samples."""
    if value is None or (isinstance(value, (Mapping, list, tuple)) and len(value) == 0):
        return None
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)):
        pairs = [named_clip(item) for item in value]
    else:
        raise TypeError
    names = [name for name, _ in pairs]
    if len(pairs) > MAX_KNOWN_SPEAKERS or len(set(names)) != len(names):
        raise InvalidOptionError(
            f"known_speakers takes at most {MAX_KNOWN_SPEAKERS} distinct names, each with one clip; "
            f"not {len(pairs)} with {len(set(names))} distinct."
        )
    for name, clip in pairs:
        if not isinstance(name, str) or not 0 < len(name) <= 64 or not name.isprintable():
            raise InvalidOptionError(f"a known speaker's name must be 1 to 64 printable characters, not {show(name)}.")
    clips = [str(clip) if isinstance(clip, PurePath) else clip for _, clip in pairs]
    if any(not isinstance(clip, (str, bytes, np.ndarray)) or len(clip) == 0 for clip in clips):
        raise TypeError
    return tuple(zip(names, clips))


def named_clip(item: Any) -> tuple[Any, Any]:
    if isinstance(item, str):
        name, _, clip = item.partition("=")
        if not name or not clip:
            raise InvalidOptionError(f"a known speaker is NAME=CLIP (a short clip of that voice), not {show(item)}.")
        return name, clip
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError
