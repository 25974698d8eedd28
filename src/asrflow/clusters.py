"""Voice embeddings into speakers (diarize.py's windows): how many there are, and which window is whose.

The count, when not given, is read from the eigengap of the windows' nearest-neighbour graph; a short recording,
whose graph is too small for that, keeps average linkage's tree and a threshold on how alike voices are. The
clusters, of that count, are the graph's (spectral clustering).
"""

from __future__ import annotations

import numpy as np

SAME_VOICE = 0.8  # short recordings: clusters whose centroids are this alike (cosine) are one voice (Resemblyzer's)
# windows (20 s of speech) below which the count is not read from the eigengap: after NeMo's threshold of 80
# segments for its short-recording counting (its segments step 0.75 s, these windows 0.25 s)
EIGENGAP_MIN = 80
COUNTED = 500  # windows the count is estimated on at most (an evenly spaced sample)


def eigengap_count(x: np.ndarray, low: int, high: int, least: int, spectra: list | None = None) -> int:
    """The speaker count by the eigengap of a graph that joins each window to its p likest (cosine), p chosen
    as the graph's clusters are clearest (NME-SC: Park et al., "Auto-tuning spectral clustering for speaker
    diarization using normalized maximum eigengap", 2019): the count at the largest gap between the Laplacian's
    smallest eigenvalues, if that gap is a clear one (below). Nothing in it is a threshold on how alike two voices
    are: held-out espeak voices of different sex have k-means centroids as alike (0.8-0.9) as one voice's two
    halves, and are still two groups of windows each likest to its own. Estimated on an evenly spaced sample of at most COUNTED windows."""
    x = _sample(x)
    top = max(low, min(high, len(x) // least))  # every speaker in at least `least` windows
    best = (np.inf, max(1, low), None)
    for p, values in spectra if spectra is not None else graph_spectra(x):
        gaps = np.diff(values[: top + 1])
        if not len(gaps) or gaps.max() <= 1e-9 * values[-1]:  # none, or rounding's (identical windows)
            continue
        ratio = p / (gaps.max() / values[-1])  # p over the normalised largest gap: the smaller, the clearer
        if ratio < best[0]:
            best = (ratio, int(np.argmax(gaps[max(1, low) - 1 :])) + max(1, low), values)
    _, k, values = best
    if k <= max(1, low):
        return k
    # k groups: k eigenvalues near zero, and the next at least twice the last of them. One voice's spectrum rises
    # gradually, with its largest gap anywhere (held-out single voices were split in 5 to 8 without this); two
    # voices' rises at 2 and may gap more, absolutely, further up. So the count is the largest gap's if it is
    # clear, else the largest clear gap's, else the fewest speakers allowed.
    clear = [j for j in range(max(2, low), top + 1) if values[j] >= 2 * values[j - 1]]
    if k in clear:
        return k
    return max(clear, key=lambda j: values[j] - values[j - 1]) if clear else max(1, low)


def linkage_count(x: np.ndarray, low: int, high: int, least: int) -> int:
    """The count for a short recording (fewer than EIGENGAP_MIN windows, where the eigengap is not stable): the
    count with the best silhouette among average linkage's cuts whose every cluster is a voice of its own
    (SAME_VOICE) in at least `least` windows; one when none passes (unless min_speakers asks for more)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist, squareform
    from sklearn.metrics import silhouette_score

    distances = pdist(x, "cosine")
    tree = linkage(distances, "average")  # once: each count is a cut of the same tree
    square, candidates = squareform(distances), []
    for k in range(max(2, low), min(high, len(x) - 1) + 1):
        labels = fcluster(tree, k, "maxclust") - 1
        if len(set(labels.tolist())) < 2:
            continue
        score = silhouette_score(square, labels, metric="precomputed")
        candidates.append((distinct(x, labels, least), score, labels))
    passing = [c for c in candidates if c[0]] or ([] if low <= 1 else candidates)
    if not passing:  # one speaker, or as few as min_speakers asks where no cut has that many
        return max(1, min(low, len(x)))
    return len(set(max(passing, key=lambda c: c[1])[2].tolist()))


def spectral(x: np.ndarray, k: int, least: int = 0, low: int = 1, spectra: list | None = None) -> np.ndarray:
    """k clusters of the windows (fewer, down to `low`, while one would have fewer than `least` windows): k-means
    on the eigenvectors of the nearest-neighbour graph's k smallest eigenvalues (NME-SC's clustering, its p chosen
    as the gap at k is clearest). The graph follows each window's likest: two voices as alike as held-out espeak
    voices of one sex (centroids 0.9-0.94 cosine) have windows that are still each likest to their own (98%), where
    k-means on the embeddings themselves drew its border through one of them (a fifth of its windows given to the
    other). Past COUNTED windows an evenly spaced sample is clustered (the graphs' spectra computed once, whatever
    k) and every window takes the cluster of its likest sampled window, a chunk at a time: memory stays bounded."""
    sample = _sample(x)
    spectra = spectra if spectra is not None else graph_spectra(sample)
    share = len(sample) / len(x)
    while True:
        labels = _clustered(sample, spectra, k)
        if k <= max(1, low) or np.bincount(labels).min() >= least * share:
            break
        k -= 1
    if len(sample) == len(x):
        return labels
    known, found = _unit(sample), np.empty(len(x), int)
    for start in range(0, len(x), 10_000):
        found[start : start + 10_000] = labels[np.argmax(_unit(x[start : start + 10_000]) @ known.T, axis=1)]
    return found


def graph_spectra(x: np.ndarray) -> list:
    """(p, the eigenvalues of the p-neighbour graph's Laplacian) for the sample of `x` that the count and the
    clusters are read from: computed once, for both."""
    return [(p, np.linalg.eigvalsh(laplacian)) for p, laplacian in _laplacians(_sample(x))]


def _clustered(sample: np.ndarray, spectra: list, k: int) -> np.ndarray:
    """The sample's k clusters on the graph whose gap at k is clearest (p over the normalised gap); k-means on
    the embeddings where no graph has a gap at k."""
    if k <= 1:
        return np.zeros(len(sample), int)
    best = (np.inf, None)
    for p, values in spectra:
        gap = values[k] - values[k - 1] if k < len(values) else 0.0
        if gap > 1e-9 * values[-1] and (ratio := p / (gap / values[-1])) < best[0]:
            best = (ratio, p)
    if best[1] is None:
        return kmeans(sample, k)
    from sklearn.cluster import KMeans

    laplacian = dict(_laplacians(sample, only=best[1]))[best[1]]
    vectors = np.linalg.eigh(laplacian)[1][:, :k]
    return KMeans(k, n_init=10, random_state=0).fit_predict(vectors)


def kmeans(x: np.ndarray, k: int) -> np.ndarray:
    """k clusters of the embeddings, made unit length (k-means on them ranks by cosine)."""
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=0).fit_predict(_unit(x))


def _sample(x: np.ndarray) -> np.ndarray:
    """At most COUNTED of the windows, evenly spaced."""
    return x[np.linspace(0, len(x) - 1, COUNTED).astype(int)] if len(x) > COUNTED else x


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _laplacians(x: np.ndarray, only: int | None = None):
    """(p, the Laplacian of the graph joining each window to its p likest, cosine) for 30 p's from 2 to a quarter
    of the windows (or for p = `only`)."""
    unit = _unit(x)
    likest = np.argsort(-(unit @ unit.T), axis=1)
    for p in [only] if only else sorted(set(np.linspace(2, max(2, len(x) // 4), 30).astype(int).tolist())):
        graph = np.zeros((len(x), len(x)))
        np.put_along_axis(graph, likest[:, :p], 1.0, axis=1)
        graph = (graph + graph.T) / 2
        yield p, np.diag(graph.sum(axis=1)) - graph


def distinct(x: np.ndarray, labels: np.ndarray, least: int) -> bool:
    """Every cluster heard long enough, and no two of them as alike as one voice is to itself."""
    counts = np.bincount(labels)
    if counts.min() < least:
        return False
    centroids = np.array([x[labels == i].mean(axis=0) for i in range(len(counts))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    similarity = centroids @ centroids.T
    np.fill_diagonal(similarity, -1.0)
    return bool(similarity.max() < SAME_VOICE)
