"""Who spoke when, offline: Resemblyzer's voice encoder (its trained weights ship in its wheel) embeds the audio
as it streams, scikit-learn clusters the embeddings of the moments someone speaks, and every word and segment
gets the speaker of its moment; segments are split where the speaker changes.

Speakers are named A, B, C ... in order of first appearance (as OpenAI's diarized_json does). The count is
estimated unless it is given (the eigengap of the windows' nearest-neighbour graph; average linkage's tree for
short recordings); the clusters, of that count, are that graph's (spectral clustering).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np

from asrflow.audio import SAMPLE_RATE
from asrflow.clusters import EIGENGAP_MIN, eigengap_count, graph_spectra, linkage_count, spectral
from asrflow.errors import InvalidOptionError
from asrflow.transcript import Segment, Word

CHUNK = 30 * SAMPLE_RATE  # embedded at once (the window overlaps the chunk before)
WINDOW = int(1.6 * SAMPLE_RATE)  # Resemblyzer's partial utterance
RATE = 4  # windows a second
SPEECH = 0.7  # windows at least this much covered by words are clustered
KNOWN_VOICE = 0.7  # a cluster is named after a known speaker only if its voice is at least this alike (cosine)
_IMPORTING = threading.Lock()  # encoder(): two first uses must not interleave their catch_warnings
MIN_SECONDS = 2.0  # a speaker found in less speech than this is taken for noise, when the count is estimated


class Diarizer:
    """Listens to the audio as it passes (`hear`), then labels the transcript's segments (`label`)."""

    def __init__(
        self,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        known: dict[str, np.ndarray] | None = None,
    ):
        self.num, self.low, self.high = num_speakers, min_speakers or 1, max_speakers or max(8, min_speakers or 1)
        model = encoder()  # loaded (or refused, naming what to install) before any audio is decoded
        # known speakers (OpenAI's known_speaker_names[] + references): a voice embedding each, to name the clusters
        self.known = {name: model.embed_utterance(samples) for name, samples in (known or {}).items()}
        self.times: list[float] = []
        self.embeddings: list[np.ndarray] = []
        self.pieces, self.held, self.offset = [], 0, 0  # audio not yet chunked (from sample `offset`)
        self.pending: list[tuple[np.ndarray, int, bool]] = []  # chunks heard, not yet embedded

    def hear(self, pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Passes the pieces on, setting them aside a chunk at a time to be embedded (`embed_one`): no more than
        the block being decoded is held, since the segments come through `labelled`, which embeds as it goes."""
        for piece in pieces:
            self.pieces.append(piece)
            self.held += len(piece)
            if self.held >= CHUNK + WINDOW:
                self._set_aside(final=False)
            yield piece
        self._set_aside(final=True)

    def _set_aside(self, final: bool) -> None:
        samples = np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)
        self.pending.append((samples, self.offset, final))
        if not final:  # keep the last window's worth, so that windows across the edge are embedded next time
            keep = len(samples) - WINDOW
            self.pieces, self.held, self.offset = [samples[keep:]], WINDOW, self.offset + keep

    def embed_one(self) -> bool:
        """Embeds the oldest chunk set aside (a step of work, as long as a window's decoding); False if none."""
        if not self.pending:
            return False
        samples, offset, final = self.pending.pop(0)
        if len(samples) >= WINDOW:
            _, partials, slices = encoder().embed_utterance(samples, return_partials=True, rate=RATE, min_coverage=0.5)
            for partial, where in zip(partials, slices):
                centre = (where.start + min(where.stop, len(samples))) / 2
                self.times.append((offset + centre) / SAMPLE_RATE)
                self.embeddings.append(partial)
        if not final:  # windows centred in the kept overlap: embedded again, with their context, next time
            self._drop_after((offset + len(samples) - WINDOW) / SAMPLE_RATE + WINDOW / SAMPLE_RATE / 2)
        return True

    def _drop_after(self, seconds: float) -> None:
        """Windows centred in the kept overlap are embedded again with their context next time."""
        while self.times and self.times[-1] >= seconds:
            self.times.pop()
            self.embeddings.pop()

    def labelled(self, segments: Iterable[Segment | None]) -> Iterator[Segment | None]:
        """The segments, labelled once they are all decoded (and all the audio heard); until then a None for each
        step of decoding (SegmentStream: a scheduler's turn each)."""
        decoded = []
        for segment in segments:  # a chunk embedded after each step of decoding: the two keep pace
            if segment is not None:
                decoded.append(segment)
            yield None
            if self.embed_one():
                yield None
        while self.embed_one():
            yield None
        yield from self.label(decoded)

    def label(self, segments: list[Segment]) -> list[Segment]:
        """The segments with a speaker on every word and segment, split where the speaker changes."""
        times = np.asarray(self.times)
        spans = [(w.start, w.end) for s in segments for w in s.words] or [(s.start, s.end) for s in segments]
        # windows mostly filled with speech: one with a pause in it sounds like no one in particular
        heard = np.flatnonzero(_coverage(times, spans) >= SPEECH)
        if not len(heard):
            return segments
        heard_times = times[heard]
        embeddings = np.asarray(self.embeddings)[heard]
        labels = _smoothed(self._cluster(embeddings), heard_times)
        names = _names(labels, _recognised(embeddings, labels, self.known))

        def speaker(start: float, end: float) -> str:
            inside = np.flatnonzero((heard_times >= start) & (heard_times <= end))
            if not len(inside):  # no window centred in it: the nearest one
                inside = [np.argmin(np.abs(heard_times - (start + end) / 2))]
            return names[np.bincount(labels[inside]).argmax()]

        return [part for s in segments for part in _split(s, speaker)]

    def _cluster(self, x: np.ndarray) -> np.ndarray:
        """Cluster numbers for the embeddings: `num` clusters if given, else as many as estimated (clusters.py),
        each heard for at least MIN_SECONDS (fewer clusters otherwise, down to min_speakers); the clusters are
        the nearest-neighbour graph's (`spectral`). However long the audio, at most clusters.COUNTED windows are
        clustered and the rest join the cluster of their likest sampled window, so that memory and time stay bounded (10 hours:
        144,000 embeddings)."""
        if len(x) < 3 or np.ptp(x, axis=0).max() <= 1e-6:  # a window or two, or one sound repeated: one speaker
            return np.zeros(len(x), int)
        if self.num is not None:
            return spectral(x, min(self.num, len(x)))
        least, spectra = int(MIN_SECONDS * RATE), graph_spectra(x)
        if len(x) >= EIGENGAP_MIN:
            k = eigengap_count(x, self.low, self.high, least, spectra)
        else:
            k = linkage_count(x, self.low, self.high, least)
        return spectral(x, k, least, self.low, spectra)


def _smoothed(labels: np.ndarray, times: np.ndarray, reach: int = 2) -> np.ndarray:
    """Each window takes the most common label among itself and `reach` neighbours either side (within 1 s),
    so that one odd window at a turn's edge does not make a speaker change."""
    smoothed = labels.copy()
    for i in range(len(labels)):
        near = [j for j in range(max(0, i - reach), min(len(labels), i + reach + 1)) if abs(times[j] - times[i]) <= 1.0]
        smoothed[i] = np.bincount(labels[near]).argmax()
    return smoothed


def _coverage(times: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray:
    """For each window (centred at `times`), the share of it that the spans cover."""
    half = WINDOW / SAMPLE_RATE / 2
    covered = np.zeros(len(times))
    for start, end in spans:
        covered += np.clip(np.minimum(times + half, end) - np.maximum(times - half, start), 0, None)
    return covered / (2 * half)


def _recognised(x: np.ndarray, labels: np.ndarray, known: dict[str, np.ndarray]) -> dict[int, str]:
    """Clusters named after the known speaker whose reference sounds most like them (each name used once, the
    likest pairs first, and only where the voices are alike: above KNOWN_VOICE)."""
    if not known:
        return {}
    clusters = sorted(set(labels.tolist()))
    centroids = np.array([x[labels == c].mean(axis=0) for c in clusters])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    names = list(known)
    similarity = centroids @ np.array([known[n] for n in names]).T
    named: dict[int, str] = {}
    for i, j in sorted(np.ndindex(similarity.shape), key=lambda ij: -similarity[ij]):
        if similarity[i, j] >= KNOWN_VOICE and clusters[i] not in named and names[j] not in named.values():
            named[clusters[i]] = names[j]
    return named


def _names(labels: np.ndarray, known: dict[int, str] | None = None) -> dict[int, str]:
    """Cluster numbers to their known speaker's name, the others to A, B, C ... in order of first appearance."""
    order = [label for label in dict.fromkeys(labels.tolist()) if label not in (known or {})]
    return {label: _letters(i) for i, label in enumerate(order)} | (known or {})


def _letters(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else _letters(i // 26 - 1) + chr(ord("A") + i % 26)


def _split(segment: Segment, speaker) -> list[Segment]:
    """A segment per run of one speaker's words (the whole segment when it has no words or one speaker)."""
    if not segment.words:
        return [replace(segment, speaker=speaker(segment.start, segment.end))]
    words = [replace(w, speaker=speaker(w.start, w.end)) for w in segment.words]
    runs: list[list[Word]] = []
    for w in words:
        if runs and runs[-1][-1].speaker == w.speaker:
            runs[-1].append(w)
        else:
            runs.append([w])
    if len(runs) == 1:
        return [replace(segment, words=words, speaker=words[0].speaker)]
    return [
        replace(
            segment, start=r[0].start, end=r[-1].end, text=" ".join(w.word for w in r), words=r, speaker=r[0].speaker
        )
        for r in runs
    ]


@functools.cache
def encoder():
    """Resemblyzer's voice encoder, loaded once (its weights are in its wheel: nothing is downloaded).

    Importing it imports webrtcvad, which imports setuptools' deprecated pkg_resources: a UserWarning that is no
    user's concern. It is silenced for that import only, once (catch_warnings swaps the process's filters while it
    lasts, and restores them after)."""
    import warnings

    try:
        with _IMPORTING, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sklearn  # noqa: F401 - clusters.py's, checked here: before any decoding
            from resemblyzer import VoiceEncoder
    except ModuleNotFoundError as e:  # a package missing; a broken one is the server's problem, raised as it is
        raise InvalidOptionError(
            f"diarize needs {e.name or 'resemblyzer'}, which this environment lacks: pip install resemblyzer "
            "scikit-learn 'setuptools<81' (a model logged with diarize among its options lists them in its "
            "requirements)."
        ) from None

    return VoiceEncoder("cpu", verbose=False)
