"""FlaxTrainer.initialized builds a family's networks in one program that XLA compiles at a low
optimization level: their initial weights (batch-norm statistics and the Rngs' counters included)
must be the ones that building them initializer by initializer gives, bit for bit."""

import json

import warm

CHECK = r"""
import json
import jax
import numpy as np
from flax import nnx
from customfit.tasks.score.with_flax import ScoreNet
from customfit.trainers.flax_trainer import FlaxTrainer


class Small(nnx.Module):  # a convolution, batch norm, dropout's Rngs and a dense layer
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 3, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(3, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.dense = nnx.Linear(12, 2, kernel_init=nnx.initializers.glorot_uniform(), rngs=rngs)


def leaves(modules):
    def bits(a):  # the Rngs' keys as their raw words
        typed_key = jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
        return np.asarray(jax.random.key_data(a) if typed_key else a)

    return [bits(a) for a in jax.tree.leaves(nnx.state(modules))]


report = {}
for name, build in {
    "small, twice from one Rngs": lambda r: (Small(r), Small(r)),
    "score network (dsm, digits)": lambda r: ScoreNet("digits", rngs=r),
}.items():
    eager, quick = leaves(build(nnx.Rngs(7))), leaves(FlaxTrainer.initialized(build, 7))
    report[name] = {
        "arrays": len(eager),
        "equal": len(eager) == len(quick)
        and all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(eager, quick)),
    }
print(json.dumps(report))
"""


def test_initialized_networks_hold_the_weights_built_one_by_one(tmp_path):
    done = warm.run(["-c", CHECK], backend="jax", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["small, twice from one Rngs"]["arrays"] >= 14, report
    assert report["score network (dsm, digits)"]["arrays"] >= 6, report
    assert all(r["equal"] for r in report.values()), report
