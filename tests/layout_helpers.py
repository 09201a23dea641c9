"""Canonical weights only the parity tests use, from NumPy alone, so that every engine starts
from the same numbers: one function per family, in that family's canonical layout."""

import math

import numpy as np

from customfit.tasks.gan import layout as gan_layout
from customfit.tasks.score import layout as score_layout
from customfit.tasks.vae import layout as vae_layout


def gan_random_weights(model, latent, seed=0):
    """Canonical GAN weights: Glorot-uniform kernels, small nonzero biases and betas, gammas near
    1, positive moving variances."""
    rng = np.random.default_rng(seed)
    weights = {}
    for net, entry_list in gan_layout.entries(model, latent).items():
        arrays = []
        for e in entry_list:
            if e.role == "kernel":
                receptive = int(np.prod(e.shape[:-2])) if len(e.shape) > 2 else 1
                limit = np.sqrt(6.0 / (receptive * (e.shape[-2] + e.shape[-1])))
                a = rng.uniform(-limit, limit, e.shape)
            elif e.role == "gamma":
                a = rng.uniform(0.8, 1.2, e.shape)
            elif e.role == "variance":
                a = rng.uniform(0.5, 1.5, e.shape)
            else:  # bias, beta, mean
                a = rng.normal(0.0, 0.1, e.shape)
            arrays.append(a.astype(np.float32))
        weights[net] = arrays
    return weights


def vae_glorot_weights(network, latent, seed):
    """Canonical VAE weights: Glorot-uniform kernels and small nonzero biases."""
    rng = np.random.default_rng(seed)
    weights = {}
    for net, shapes in vae_layout.canonical_shapes(network, latent).items():
        weights[net] = []
        for shape in shapes:
            if len(shape) == 1:
                weights[net].append(rng.normal(0.0, 0.1, size=shape).astype(np.float32))
                continue
            receptive = int(np.prod(shape[:-2])) if len(shape) == 4 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            weights[net].append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
    return weights


def score_glorot_weights(network, seed):
    """Canonical score-model weights: Glorot-uniform kernels and small nonzero biases."""
    rng = np.random.default_rng(seed)
    out = []
    for shape in score_layout.canonical_shapes(network):
        if len(shape) == 1:
            out.append(rng.normal(0.0, 0.1, size=shape).astype(np.float32))
        else:
            limit = math.sqrt(6.0 / (shape[0] + shape[1]))
            out.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
    return out
