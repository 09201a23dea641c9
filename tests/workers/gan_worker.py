"""Run one GAN engine on a job and write what it computed; tests/test_gan_engines.py starts one per
engine, each in its own process, because Keras's backend is fixed per process.

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> python tests/workers/gan_worker.py JOB.json

JOB.json:
    {"engine": "torch",
     "inputs": "in.npz",     # per model: weights (canonical), a real batch, the two objectives'
                             # latents: "<model>/x", "<model>/z_dis", "<model>/z_gen",
                             # "<model>/w/<net>/<i>"
     "output": "out",        # writes out.npz (arrays) and out.json (everything else)
     "models": ["lecture", "default"], "latent": 10,
     "training": {"model": "default", "n_train": 96, "batch_size": 32, "critic_steps": 2,
                  "lr": 0.001, "seed": 0},
     "frozen": true}         # keras-* engines: one update alone moves its own network only
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from state_files import through_files  # noqa: E402

from customfit import registry  # noqa: E402
from customfit.data import digits_split, epoch_seed  # noqa: E402
from customfit.tasks.gan import layout  # noqa: E402


def _trainer_class(engine):
    return registry.trainer_class("gan", engine)


def _weights(inputs, model):
    return {
        net: [
            inputs[f"{model}/w/{net}/{i}"]
            for i in range(sum(1 for k in inputs if k.startswith(f"{model}/w/{net}/")))
        ]
        for net in layout.NETWORKS
    }


def _same_state(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def parity(engine, model, latent, inputs, arrays, report):
    """Both objectives' values and gradients, and generate(), from given weights and noise."""
    trainer = _trainer_class(engine)(model, latent, 5, 1e-3, 0)
    weights = _weights(inputs, model)
    trainer.set_weights(weights)
    before, _ = trainer.state()
    x, z_dis, z_gen = (inputs[f"{model}/{k}"] for k in ("x", "z_dis", "z_gen"))
    answers = trainer.objective_and_grads((x,), {"dis": z_dis, "gen": z_gen})
    alone = trainer.objective_and_grads((x,), {"gen": z_gen})  # one objective at a time too
    after, _ = trainer.state()
    back = trainer.get_weights()
    report[model] = {
        "keys": sorted(answers),
        "alone_keys": sorted(alone),
        "alone_gen": alone["gen"][0],
        # Nothing moved: weights, moving statistics, optimizer slots and steps.
        "state_unchanged": _same_state(before, after),
        "weights_round_trip": all(
            np.array_equal(a, b) for net in layout.NETWORKS for a, b in zip(weights[net], back[net])
        ),
    }
    for name, (value, grads) in answers.items():
        report[model][f"{name}_value"] = value
        for i, grad in enumerate(grads):
            arrays[f"{model}/{name}/grad/{i}"] = np.asarray(grad)
    arrays[f"{model}/generated"] = np.asarray(trainer.generate(z_gen))


def training(engine, job, arrays, report):
    """Run A: 2 epochs straight. Run B: 1 epoch, state(), then its epoch 2 (the same seed again,
    and state() must not disturb it). Run C: a new Trainer load_state()s B's state (through
    files) and trains epoch 2. E: a Trainer built with seed + 1 (its initial weights). Also
    sample() twice with one seed and once with another."""
    data = digits_split()
    x = data.x_train[: job["n_train"]]
    seed = job["seed"]
    Trainer = _trainer_class(engine)

    def new(run_seed):
        return Trainer(job["model"], job["latent"], job["critic_steps"], job["lr"], run_seed)

    def epochs(trainer, run_seed, which):
        history = []
        for epoch in which:
            batches = []
            started = time.perf_counter()
            means = trainer.train_epoch(
                x,
                batch_size=job["batch_size"],
                shuffle_seed=epoch_seed(run_seed, epoch),
                on_batch=batches.append,
            )
            history.append(
                {
                    "epoch": epoch,
                    "means": means,
                    "batches": batches,
                    "val": trainer.evaluate(data.x_test[:64], batch_size=24),
                    "seconds": time.perf_counter() - started,
                }
            )
        return history

    a = new(seed)
    first = a.get_weights()
    report["A"] = epochs(a, seed, [1, 2])
    b = new(seed)
    report["B"] = epochs(b, seed, [1])
    state, meta = b.state()
    report["state_meta"] = meta
    report["state_steps"] = {net: int(state[f"{net}/adam/step"]) for net in layout.NETWORKS}
    taken = {key: value.copy() for key, value in state.items()}
    report["B"] += epochs(b, seed, [2])
    report["state_kept"] = _same_state(state, taken)  # no views of live memory
    state, meta = through_files(state, meta)  # as a checkpoint stores it
    c = new(seed)
    c.load_state(state, meta)
    report["C"] = epochs(c, seed, [2])
    other, again = new(seed + 1).get_weights(), new(seed).get_weights()
    report["initial_weights_follow_the_seed"] = {
        "same_seed_same": all(
            np.array_equal(p, q) for net in layout.NETWORKS for p, q in zip(again[net], first[net])
        ),
        "other_seed_other": not all(
            np.array_equal(p, q) for net in layout.NETWORKS for p, q in zip(other[net], first[net])
        ),
    }
    for run, trainer in (("A", a), ("B", b), ("C", c)):
        for name, value in trainer.state()[0].items():
            arrays[f"{run}/state/{name}"] = np.asarray(value)
    arrays["samples_0"] = np.asarray(a.sample(20, 0))
    arrays["samples_0_again"] = np.asarray(a.sample(20, 0))
    arrays["samples_1"] = np.asarray(a.sample(20, 1))


def frozen(engine, job, inputs, report):
    """keras-* engines: a GAN whose updates() is only the generator's (only the
    discriminator's) moves that network alone, batch-norm statistics included; without
    cf.frozen the generator's update would move the discriminator's statistics."""
    import keras

    import customfit as cf
    from customfit.tasks.gan import with_keras

    model, latent = "default", job["latent"]

    class GenOnly(with_keras.GAN):
        def updates(self):
            return [cf.Update("gen", self.gen_objective, self.gen)]

    class DisOnly(with_keras.GAN):
        def updates(self):
            return [cf.Update("dis", self.dis_objective, self.dis, repeat=2)]

    class GenOnlyUnfrozen(GenOnly):
        def gen_loss(self, z, training=True):  # the same loss, without cf.frozen
            logits = self.dis(self.gen(z, training=training), training=training)
            return keras.ops.mean(keras.ops.softplus(-logits))

    weights = _weights(inputs, model)
    x = inputs[f"{model}/x"]
    for name, cls in (
        ("gen_only", GenOnly),
        ("dis_only", DisOnly),
        ("gen_only_unfrozen", GenOnlyUnfrozen),
    ):
        trainer = with_keras.Trainer(model, latent, 5, 1e-3, 0, gan_class=cls)
        trainer.set_weights(weights)
        trainer.gan.fit(x, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
        after = trainer.get_weights()
        moved = {}
        for net in layout.NETWORKS:
            for e, w0, w1 in zip(trainer.entries[net], weights[net], after[net]):
                moved[f"{net}/{e.name}"] = not np.array_equal(w0, w1)
        report[name] = moved


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    engine = job["engine"]
    report, arrays = {"engine": engine, "keras_backend": os.environ.get("KERAS_BACKEND")}, {}
    with np.load(job["inputs"], allow_pickle=False) as saved:
        inputs = {key: saved[key] for key in saved.files}
    report["parity"] = {}
    for model in job.get("models", []):
        parity(engine, model, job["latent"], inputs, arrays, report["parity"])
    if job.get("training"):
        training(engine, {**job["training"], "latent": job["latent"]}, arrays, report)
    if job.get("frozen"):
        report["frozen"] = {}
        frozen(engine, job, inputs, report["frozen"])
    np.savez(job["output"] + ".npz", **arrays)
    with open(job["output"] + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
