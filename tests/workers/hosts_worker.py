"""One process of a run across hosts, or its one-device reference: tests/test_hosts.py starts
the reference, then two of these as two hosts (TF_CONFIG or KERAS_DISTRIBUTION_* set).

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> python tests/workers/hosts_worker.py JOB.json

JOB.json: {"engine": "flax", "task": "gan", "devices": 1 or 2, "batch": 0, "weights": "w.npz",
"output": "out"}. On one device the worker trains from the seed's weights and writes them to
"weights"; as a host it joins the cluster, trains from those weights (devices_worker's one
step on the `batch`-th global batch: the same samples in the same order) and, on process 0,
writes out.npz (the state) and out.json (the history).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import devices_worker  # noqa: E402
from customfit import devices as spreading, hosts  # noqa: E402


def _unflat(arrays):
    lists = {}
    for name in sorted(arrays, key=lambda k: (k.split("/")[0], int(k.split("/")[1]))):
        lists.setdefault(name.split("/")[0], []).append(arrays[name])
    return lists["weights"] if list(lists) == ["weights"] else lists


def main(job_path):
    import numpy as np

    with open(job_path) as f:
        job = json.load(f)
    engine, task, n = job["engine"], job["task"], job["devices"]
    cluster = hosts.of(engine)
    spreading.prepare(engine, n)
    if cluster is not None and engine in spreading.JAX_ENGINES:
        from customfit.parallel import coordinator

        coordinator.join(engine, cluster)
    weights = None
    if n > 1:
        with np.load(job["weights"], allow_pickle=False) as saved:
            weights = _unflat({k: saved[k] for k in saved.files})
    batch = job.get("batch", 0)
    state, history, start, _, _ = devices_worker.train(task, engine, n, weights, batch=batch)
    if n == 1:
        np.savez(job["weights"], **devices_worker.flat(start))
    if cluster is None or cluster.index == 0:
        np.savez(job["output"] + ".npz", **state)
        with open(job["output"] + ".json", "w") as f:
            json.dump({"history": history}, f)


if __name__ == "__main__":
    main(sys.argv[1])
