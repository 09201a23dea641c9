"""The judge of samples of the toy clusters: the project's own, sharing no code with any model.

It reads an (n, 2) array of samples and compares it with fresh data from the same five clusters
(customfit.data.toy_clusters: the lecture's centres, spread 0.2, each point's cluster drawn
uniformly), which no model has seen:

- energy_distance: the (squared) energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between the
  samples X and REFERENCE_SIZE fresh points Y, every expectation the plain mean over all pairs
  (the V-statistic; in one dimension it is scipy.stats.energy_distance squared). 0 for equal
  distributions; finite samples leave a floor, which data_energy_distance shows: the same figure
  for as many fresh data points as there are samples, drawn independently of Y.
- within_3sigma: the share of samples within 3 x 0.2 of some centre (for the data itself about
  1 - exp(-9/2) = 0.989 in two dimensions).
- cluster_shares: each centre's share of the samples, assigned to their nearest centre
  (0.2 each for the data, up to the draw), and their minimum and maximum.
- nonfinite_samples: samples that left the numbers (a sampler that blew up); they count in no
  cluster and leave the energy distance NaN, which fails every bar.
"""

import functools

import numpy as np

SPREAD = 0.2
RADIUS = 3 * SPREAD
REFERENCE_SIZE = 5000
REFERENCE_SEED = 1001  # the fresh points every sample set is compared with
DATA_SEED = 1002  # the fresh points behind the data-vs-data figure
_CHUNK = 2000


def mean_distance(a, b):
    """The mean Euclidean distance over all pairs (a_i, b_j), in float64, chunked."""
    from scipy.spatial.distance import cdist

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    total = sum(cdist(a[i : i + _CHUNK], b).sum() for i in range(0, len(a), _CHUNK))
    return total / (len(a) * len(b))


def energy_distance(a, b, b_self=None):
    """2 E|A - B| - E|A - A'| - E|B - B'| (V-statistic); b_self: E|B - B'| if known."""
    if b_self is None:
        b_self = mean_distance(b, b)
    return 2.0 * mean_distance(a, b) - mean_distance(a, a) - b_self


@functools.lru_cache(maxsize=None)
def centres():
    from customfit.data import toy_clusters

    return toy_clusters(n=1)[2].astype(np.float64)


@functools.lru_cache(maxsize=None)
def _reference():
    from customfit.data import toy_clusters

    points = toy_clusters(n=REFERENCE_SIZE, sample_seed=REFERENCE_SEED)[0].astype(np.float64)
    return points, mean_distance(points, points)


@functools.lru_cache(maxsize=None)
def data_energy_distance(n):
    """The energy distance of n fresh data points to the reference: the floor a perfect sampler
    of n points sits on."""
    from customfit.data import toy_clusters

    points = toy_clusters(n=n, sample_seed=DATA_SEED)[0]
    reference, reference_self = _reference()
    return energy_distance(points, reference, reference_self)


def judge(samples):
    """{energy_distance, data_energy_distance, within_3sigma, cluster_share_min,
    cluster_share_max, cluster_shares} for an (n, 2) array of samples."""
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 2 or samples.shape[1] != 2 or len(samples) < 2:
        raise ValueError(
            f"samples: expected an (n, 2) array with n >= 2, given shape {samples.shape}"
        )
    # A sampler that blew up (too large a step) fails the judge rather than the run: its lost
    # samples are in no cluster, and its energy distance is not a number.
    finite = np.isfinite(samples).all(axis=1)
    from scipy.spatial.distance import cdist

    reference, reference_self = _reference()
    to_centres = cdist(samples[finite], centres())
    shares = np.bincount(to_centres.argmin(axis=1), minlength=len(centres())) / len(samples)
    distance = energy_distance(samples, reference, reference_self) if finite.all() else np.nan
    return {
        "energy_distance": float(distance),
        "data_energy_distance": float(data_energy_distance(len(samples))),
        "within_3sigma": float(np.sum(to_centres.min(axis=1) <= RADIUS) / len(samples)),
        "cluster_share_min": float(shares.min()),
        "cluster_share_max": float(shares.max()),
        "cluster_shares": [float(s) for s in shares],
        "nonfinite_samples": int(np.sum(~finite)),
    }
