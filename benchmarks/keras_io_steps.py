"""cf.Model against a train_step hand-written per backend the keras-io way, for three of the
gallery's keras-io models: examples/keras_io/dcgan.py (two networks, two optimizers), vae.py
(keras-io's conv VAE at half its widths, MNIST 28x28, latent 2) and ddim.py (a multilayer
perceptron denoiser, a noise schedule, an EMA network updated after each optimizer step).

    .venv/bin/python benchmarks/keras_io_steps.py [--models dcgan vae ddim]
        [--backends tensorflow torch jax] [--steps 10] [--pairs 7] [--threads 1] [--out PATH]

The cf.Model is the script's own make_model(). The hand-written steps follow keras-io's three
guides "Customizing what happens in fit()": TensorFlow, tf.GradientTape and
optimizer.apply_gradients; PyTorch, zero_grad(), loss.backward(), optimizer.apply(grads,
weights) under torch.no_grad(); JAX, a stateless train_step(state, data) with stateless_call,
jax.value_and_grad and optimizer.stateless_apply. Each is a keras.Model holding networks from
the same script's factories and doing the same work per batch as the script's objective: the
same losses and random draws, the same updates in the same order, optimizers with the same
settings (copied from the cf.Model's), the same metrics, and the DDIM's EMA update after the
optimizer step, inside the train step (the cf.Model's after_step()). Started from the same
variables, the two reach the same weights and logs on every backend (but for the DCGAN's dropout
masks on torch, which a Dropout layer without a seed draws from torch's global generator). One
difference is keras-io's: its PyTorch step's loss.backward() also computes the gradients of the
network that update leaves alone (the DCGAN's other network), which cf.Model does not.

One process per backend, held to --threads threads and CPUs (customfit/bench/threads.py, as
`customfit bench` runs). In it, per model: a warm-up fit() of each (tracing, compiling), then
--pairs pairs of timed fit() epochs of --steps batches, the two in turn, the order alternating
pair by pair (ABBAAB...). Ratio = hand-written seconds / cf.Model seconds per pair; its median
over the pairs, and its spread (lowest, highest). >= 0.97: cf.Model at most about 3 % slower.
Results: benchmarks/results/keras_io_steps.json and .md (--out: another path, without suffix).
"""

import argparse
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GALLERY = ROOT / "examples" / "keras_io"
MODELS = ("dcgan", "vae", "ddim")
BACKENDS = ("tensorflow", "torch", "jax")
# The batch sizes of dcgan.py's and vae.py's full runs; keras-io's DDIM's (ddim.py trains with 128).
BATCH = {"dcgan": 64, "vae": 128, "ddim": 64}
PREFIX = "KERAS-IO-STEPS "


# --- the gallery's models, and the hand-written ones ------------------------------------------


def load(name):
    """examples/keras_io/<name>.py, imported: its network factories, constants and make_model()."""
    if str(GALLERY) not in sys.path:
        sys.path.insert(0, str(GALLERY))  # the scripts import their neighbour gallery.py
    return importlib.import_module(name)


# Built inside the child process, once its backend is fixed.


def handwritten(name, nets, reference):
    """keras-io's version of the gallery script `nets`, compiled: a keras.Model with the script's
    networks (from its factories) and a train_step written for this backend. `reference` is the script's
    own cf.Model, from make_model(): its optimizers' settings are copied (learning rate or its
    schedule, beta_1, weight decay), and the DDIM's constants (normalisation, EMA rate) read."""
    import keras
    from keras import ops

    backend = keras.backend.backend()

    def twin(optimizer):
        """A fresh optimizer of the same class with the same settings."""
        return type(optimizer).from_config(optimizer.get_config())

    class Trackers(keras.Model):
        """The metrics each hand-written model reports, as keras-io's trackers: those the
        gallery's cf.Model logs."""

        def track(self, *names):
            self.trackers = [keras.metrics.Mean(name=n) for n in names]
            self.built = True  # as keras-io's GAN: its networks are built at construction

        @property
        def metrics(self):
            return self.trackers

        def record(self, values):
            for tracker, value in zip(self.trackers, values):
                tracker.update_state(value)
            return {t.name: t.result() for t in self.trackers}

        def stateless_record(self, metrics_variables, values):
            """The JAX guide's loop over the metrics, stateless."""
            logs, new = {}, []
            for tracker, value in zip(self.trackers, values):
                mine = metrics_variables[len(new) : len(new) + len(tracker.variables)]
                mine = tracker.stateless_update_state(mine, value)
                logs[tracker.name] = tracker.stateless_result(mine)
                new += mine
            return logs, new

    if name == "dcgan":
        latent = nets.LATENT

        class GANBase(Trackers):
            """keras-io's DCGAN (examples/generative/dcgan_overriding_train_step.py): one
            discriminator step on generated (label 1) and real (label 0) images with noisy
            labels, then one generator step with every label saying "real"."""

            def __init__(self):
                super().__init__()
                self.discriminator = nets.make_discriminator()
                self.generator = nets.make_generator()
                self.seed_generator = keras.random.SeedGenerator(1337)
                self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
                self.track("d_loss", "g_loss")

            def compile(self, d_optimizer, g_optimizer):
                super().compile()
                self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

            def d_loss(self, real):
                n = ops.shape(real)[0]
                z = keras.random.normal((n, latent), seed=self.seed_generator)
                generated = self.generator(z, training=True)
                combined = ops.concatenate([generated, real], axis=0)
                labels = ops.concatenate([ops.ones((n, 1)), ops.zeros((n, 1))], axis=0)
                labels += 0.05 * keras.random.uniform(ops.shape(labels), seed=self.seed_generator)
                return self.loss_fn(labels, self.discriminator(combined, training=True))

            def g_loss(self, real):
                n = ops.shape(real)[0]
                z = keras.random.normal((n, latent), seed=self.seed_generator)
                predictions = self.discriminator(self.generator(z, training=True), training=True)
                return self.loss_fn(ops.zeros((n, 1)), predictions)

        if backend == "tensorflow":
            import tensorflow as tf

            class GAN(GANBase):
                def train_step(self, real):
                    with tf.GradientTape() as tape:
                        d_loss = self.d_loss(real)
                    weights = self.discriminator.trainable_weights
                    grads = tape.gradient(d_loss, weights)
                    self.d_optimizer.apply_gradients(zip(grads, weights))
                    with tf.GradientTape() as tape:
                        g_loss = self.g_loss(real)
                    weights = self.generator.trainable_weights
                    grads = tape.gradient(g_loss, weights)
                    self.g_optimizer.apply_gradients(zip(grads, weights))
                    return self.record((d_loss, g_loss))

        elif backend == "torch":
            import torch

            class GAN(GANBase):
                def train_step(self, real):
                    self.zero_grad()
                    d_loss = self.d_loss(real)
                    d_loss.backward()
                    weights = self.discriminator.trainable_weights
                    with torch.no_grad():
                        self.d_optimizer.apply([v.value.grad for v in weights], weights)
                    self.zero_grad()
                    g_loss = self.g_loss(real)
                    g_loss.backward()
                    weights = self.generator.trainable_weights
                    with torch.no_grad():
                        self.g_optimizer.apply([v.value.grad for v in weights], weights)
                    return self.record((d_loss.detach(), g_loss.detach()))

        else:
            import jax

            class Optimizers(keras.optimizers.Optimizer):
                """The two optimizers behind the one `model.optimizer` whose variables Keras's
                JAX trainer carries in the state: the discriminator's, then the generator's."""

                def __init__(self, d, g):
                    super().__init__(learning_rate=0.0)
                    object.__setattr__(self, "pair", (d, g))

                @property
                def variables(self):
                    return self._variables[:] + self.pair[0].variables + self.pair[1].variables

                def build(self, var_list):
                    self.built = True

            class GAN(GANBase):
                def compile(self, d_optimizer, g_optimizer):
                    d_optimizer.build(self.discriminator.trainable_variables)
                    g_optimizer.build(self.generator.trainable_variables)
                    keras.Model.compile(self, optimizer=Optimizers(d_optimizer, g_optimizer))
                    self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

                def call(self, real, part="d", training=False):
                    return self.d_loss(real) if part == "d" else self.g_loss(real)

                def loss_and_updates(self, mine, rest, non_trainable, real, part):
                    trainable = self.merge(part, mine, rest)
                    loss, non_trainable = self.stateless_call(
                        trainable, non_trainable, real, part=part, training=True
                    )
                    return loss, non_trainable

                def split(self, part, trainable):
                    n = len(self.discriminator.trainable_variables)
                    d, g = trainable[:n], trainable[n:]
                    return (d, g) if part == "d" else (g, d)

                def merge(self, part, mine, rest):
                    return list(mine) + list(rest) if part == "d" else list(rest) + list(mine)

                def train_step(self, state, data):
                    trainable, non_trainable, optimizer_variables, metrics_variables = state
                    real = data[0] if isinstance(data, tuple) else data
                    own = len(self.optimizer._variables)
                    nd = len(self.d_optimizer.variables)
                    slots = {
                        "d": optimizer_variables[own : own + nd],
                        "g": optimizer_variables[own + nd :],
                    }
                    losses = []
                    for part, optimizer in (("d", self.d_optimizer), ("g", self.g_optimizer)):
                        mine, rest = self.split(part, trainable)
                        grad_fn = jax.value_and_grad(self.loss_and_updates, has_aux=True)
                        (loss, non_trainable), grads = grad_fn(
                            mine, rest, non_trainable, real, part
                        )
                        mine, slots[part] = optimizer.stateless_apply(slots[part], grads, mine)
                        trainable = self.merge(part, mine, rest)
                        losses.append(loss)
                    logs, metrics_variables = self.stateless_record(metrics_variables, losses)
                    optimizer_variables = optimizer_variables[:own] + slots["d"] + slots["g"]
                    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

        def make():
            model = GAN()
            d, g = reference.optimizer.members["d"], reference.optimizer.members["g"]
            model.compile(twin(d), twin(g))
            return model

        return make()

    if name == "vae":

        class VAEBase(Trackers):
            """keras-io's VAE (examples/generative/vae.py), its encoder giving the mean and the
            log-variance side by side as the gallery's does."""

            def __init__(self):
                super().__init__()
                self.encoder = nets.make_encoder()
                self.decoder = nets.make_decoder()
                self.seed_generator = keras.random.SeedGenerator(1337)
                # The gallery's VAE logs fit()'s "loss" and its three trackers' results.
                self.track("loss", "total_loss", "reconstruction_loss", "kl_loss")

            def call(self, data, training=False):
                z_mean, z_log_var = ops.split(self.encoder(data, training=training), 2, axis=-1)
                epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
                z = z_mean + ops.exp(0.5 * z_log_var) * epsilon
                reconstruction = self.decoder(z, training=training)
                reconstruction_loss = ops.mean(
                    ops.sum(keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2))
                )
                kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
                kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
                total_loss = reconstruction_loss + kl_loss
                return total_loss, total_loss, reconstruction_loss, kl_loss

        if backend == "tensorflow":
            import tensorflow as tf

            class VAE(VAEBase):
                def train_step(self, data):
                    with tf.GradientTape() as tape:
                        losses = self(data, training=True)
                    grads = tape.gradient(losses[0], self.trainable_weights)
                    self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
                    return self.record(losses)

        elif backend == "torch":
            import torch

            class VAE(VAEBase):
                def train_step(self, data):
                    self.zero_grad()
                    losses = self(data, training=True)
                    losses[0].backward()
                    weights = self.trainable_weights
                    with torch.no_grad():
                        self.optimizer.apply([v.value.grad for v in weights], weights)
                    return self.record([x.detach() for x in losses])

        else:
            import jax

            class VAE(VAEBase):
                def loss_and_updates(self, trainable, non_trainable, data):
                    losses, non_trainable = self.stateless_call(
                        trainable, non_trainable, data, training=True
                    )
                    return losses[0], (losses, non_trainable)

                def train_step(self, state, data):
                    trainable, non_trainable, optimizer_variables, metrics_variables = state
                    data = data[0] if isinstance(data, tuple) else data
                    grad_fn = jax.value_and_grad(self.loss_and_updates, has_aux=True)
                    (_, (losses, non_trainable)), grads = grad_fn(trainable, non_trainable, data)
                    trainable, optimizer_variables = self.optimizer.stateless_apply(
                        optimizer_variables, grads, trainable
                    )
                    logs, metrics_variables = self.stateless_record(metrics_variables, losses)
                    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

        def make():
            model = VAE()
            model.compile(optimizer=twin(reference.optimizer))
            return model

        return make()

    # ddim

    class DDIMBase(Trackers):
        """keras-io's DDIM (examples/generative/ddim.py): train_step, then the EMA update."""

        def __init__(self):
            super().__init__()
            self.mean, self.std, self.ema = reference.mean, reference.std, reference.ema
            self.network = nets.get_network()
            self.ema_network = nets.get_network()  # the same architecture, its weights copied
            self.ema_network.set_weights(self.network.get_weights())
            self.ema_network.trainable = False
            self.seeds = keras.random.SeedGenerator(0)
            self.track("loss", "image_loss")

        def diffusion_schedule(self, diffusion_times):
            start = math.acos(nets.MAX_SIGNAL_RATE)
            end = math.acos(nets.MIN_SIGNAL_RATE)
            angles = start + diffusion_times * (end - start)
            return ops.sin(angles), ops.cos(angles)  # noise rates, signal rates

        def call(self, images, training=False):
            images = (images - self.mean) / self.std
            noises = keras.random.normal(ops.shape(images), seed=self.seeds)
            times = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.seeds)
            noise_rates, signal_rates = self.diffusion_schedule(times)
            noisy_images = signal_rates * images + noise_rates * noises
            pred_noises = self.network([noisy_images, noise_rates**2], training=training)
            pred_images = (noisy_images - noise_rates * pred_noises) / signal_rates
            noise_loss = ops.mean(ops.abs(noises - pred_noises))
            return noise_loss, ops.mean(ops.abs(images - pred_images))

        def update_ema(self):
            for weight, ema_weight in zip(self.network.weights, self.ema_network.weights):
                ema_weight.assign(self.ema * ema_weight + (1 - self.ema) * weight)

    if backend == "tensorflow":
        import tensorflow as tf

        class DDIM(DDIMBase):
            def train_step(self, images):
                with tf.GradientTape() as tape:
                    losses = self(images, training=True)
                weights = self.network.trainable_weights
                grads = tape.gradient(losses[0], weights)
                self.optimizer.apply_gradients(zip(grads, weights))
                self.update_ema()
                return self.record(losses)

    elif backend == "torch":
        import torch

        class DDIM(DDIMBase):
            def train_step(self, images):
                self.zero_grad()
                losses = self(images, training=True)
                losses[0].backward()
                weights = self.network.trainable_weights
                with torch.no_grad():
                    self.optimizer.apply([v.value.grad for v in weights], weights)
                    self.update_ema()
                return self.record([x.detach() for x in losses])

    else:
        import jax

        class DDIM(DDIMBase):
            def loss_and_updates(self, trainable, non_trainable, images):
                losses, non_trainable = self.stateless_call(
                    trainable, non_trainable, images, training=True
                )
                return losses[0], (losses, non_trainable)

            def ema_positions(self):
                """Where each network weight and its EMA sit in the state's lists, found once."""
                trainable = {id(v): i for i, v in enumerate(self.trainable_variables)}
                rest = {id(v): i for i, v in enumerate(self.non_trainable_variables)}
                return [
                    (
                        ("t", trainable[id(w)]) if id(w) in trainable else ("n", rest[id(w)]),
                        rest[id(e)],
                    )
                    for w, e in zip(self.network.weights, self.ema_network.weights)
                ]

            def train_step(self, state, data):
                trainable, non_trainable, optimizer_variables, metrics_variables = state
                images = data[0] if isinstance(data, tuple) else data
                grad_fn = jax.value_and_grad(self.loss_and_updates, has_aux=True)
                (_, (losses, non_trainable)), grads = grad_fn(trainable, non_trainable, images)
                trainable, optimizer_variables = self.optimizer.stateless_apply(
                    optimizer_variables, grads, trainable
                )
                non_trainable = list(non_trainable)
                for (where, i), j in self.ema_positions():
                    weight = trainable[i] if where == "t" else non_trainable[i]
                    non_trainable[j] = self.ema * non_trainable[j] + (1 - self.ema) * weight
                logs, metrics_variables = self.stateless_record(metrics_variables, losses)
                return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def make():
        model = DDIM()
        model.compile(optimizer=twin(reference.optimizer))
        return model

    return make()


# --- timing, in the child ----------------------------------------------------------------------


def _one_pass(model, x, batch):
    from customfit.bench import threads

    clock = threads.Clock()
    model.fit(x, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return clock.read()


def child(args):
    from customfit.bench import threads

    cpus = threads.bind(args.threads)
    process = threads.Clock()
    import keras
    import numpy as np

    from customfit import cpu_memory

    cpu_memory.keep_freed()  # as customfit's runs and bench's workers do
    results = []
    for name in args.models:
        nets = load(name)
        shape = nets.example_batch()["x"].shape[1:]
        batch = BATCH[name]
        x = np.random.default_rng(0).uniform(size=(args.steps * batch, *shape)).astype("float32")
        models = {}
        keras.utils.set_random_seed(0)
        models["cf.Model"] = nets.make_model()
        keras.utils.set_random_seed(0)
        models["hand-written"] = handwritten(name, nets, models["cf.Model"])

        for side in models:
            _one_pass(models[side], x, batch)  # warm-up: tracing, compiling
        passes = {side: [] for side in models}
        for pair in range(args.pairs):
            order = list(models) if pair % 2 == 0 else list(models)[::-1]
            for side in order:
                passes[side].append(_one_pass(models[side], x, batch))
        cf_s = [p["wall"] for p in passes["cf.Model"]]
        hw_s = [p["wall"] for p in passes["hand-written"]]
        ratios = [h / c for c, h in zip(cf_s, hw_s)]
        cpu_ratios = [
            h["cpu"] / c["cpu"] for c, h in zip(passes["cf.Model"], passes["hand-written"])
        ]
        result = {
            "model": name,
            "backend": keras.backend.backend(),
            "source": f"examples/keras_io/{name}.py",
            "ema": "after_step",
            "batch_size": batch,
            "steps": args.steps,
            "pairs": args.pairs,
            "passes": passes,
            "ratio": statistics.median(ratios),
            "ratio_low": min(ratios),
            "ratio_high": max(ratios),
            "ratios": ratios,
            "cpu_ratio": statistics.median(cpu_ratios),
            "steps_per_second": {
                side: args.steps / statistics.median(p["wall"] for p in ps)
                for side, ps in passes.items()
            },
            "cores": {side: threads.cores(threads.add(ps)) for side, ps in passes.items()},
        }
        results.append(result)
        print(PREFIX + json.dumps(result), flush=True)
    whole = process.read()
    print(
        PREFIX
        + json.dumps(
            {
                "process": {**whole, **threads.cores(whole)},
                "cpus": cpus,
                "in_effect": threads.in_effect(),
            }
        ),
        flush=True,
    )


# --- the parent --------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="0: each framework's default")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", action="store_true", help="rewrite the .md from the .json")
    parser.add_argument("--out", default=str(HERE / "results" / "keras_io_steps"))
    args = parser.parse_args()
    args.threads = args.threads or None
    if args.child:
        child(args)
        return
    if args.markdown:  # the tables again, from the .json
        out = Path(args.out)
        out.with_suffix(".md").write_text(
            markdown(json.loads(out.with_suffix(".json").read_text()))
        )
        return
    sys.path.insert(0, str(ROOT))
    from customfit.bench import threads
    from customfit.runs.results import machine

    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine(),
        "threads": args.threads,
        "load_average_1min": [os.getloadavg()[0]],
        "command": "benchmarks/keras_io_steps.py " + " ".join(sys.argv[1:]),
        "results": [],
        "processes": {},
    }
    for backend in args.backends:
        env = threads.environment(args.threads)
        env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
        command = [sys.executable, __file__, "--child", "--threads", str(args.threads or 0)]
        command += ["--models", *args.models, "--steps", str(args.steps)]
        command += ["--pairs", str(args.pairs)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if not line.startswith(PREFIX):
                continue
            found = json.loads(line[len(PREFIX) :])
            if "process" in found:
                record["processes"][backend] = found
                print(f"{backend} process: CPU/wall {found['process']['cpu_per_wall']:.2f}")
                continue
            record["results"].append(found)
            print(
                f"{found['model']:6s} {backend:10s} hand-written / cf.Model {found['ratio']:.3f} "
                f"({found['ratio_low']:.3f}-{found['ratio_high']:.3f}, {found['pairs']} pairs)",
                flush=True,
            )
        if proc.wait():
            sys.exit(f"the {backend} process ended with status {proc.returncode}")
        record["load_average_1min"].append(os.getloadavg()[0])
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))


def markdown(record):
    m = record["machine"]
    load = record["load_average_1min"]
    threads = record["threads"]
    lines = [
        f"Measured {record['date']} on {m.get('cpu', '?')} ({m.get('cpu_count', '?')} cores), "
        f"1-minute load average {min(load):.1f}-{max(load):.1f} (other jobs on the machine); "
        + (
            f"each backend's process held to {threads} thread(s) and CPU(s) "
            "(customfit/bench/threads.py)."
            if threads
            else "each framework's default threads."
        ),
        f"`{record['command']}`",
        "",
        "Ratio: the hand-written train_step's seconds over cf.Model's, per pair of fit() epochs "
        "timed in turn; median over the pairs (lowest-highest). CPU ratio: the same of CPU "
        "seconds.",
        "",
        "| model | backend | batch | steps/pass | pairs | cf.Model steps/s | hand-written steps/s "
        "| ratio (median) | lowest-highest | CPU ratio | CPU / wall (cf, hand) | network from |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for r in record["results"]:
        sps, cores = r["steps_per_second"], r["cores"]
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['batch_size']} | {r['steps']} | {r['pairs']} | "
            f"{sps['cf.Model']:.1f} | {sps['hand-written']:.1f} | {r['ratio']:.3f} | "
            f"{r['ratio_low']:.3f}-{r['ratio_high']:.3f} | {r['cpu_ratio']:.3f} | "
            f"{cores['cf.Model']['cpu_per_wall']:.2f}, "
            f"{cores['hand-written']['cpu_per_wall']:.2f} | {r['source']} |"
        )
    lines += [
        "",
        "| backend process | CPUs | wall s | CPU s | CPU / wall | runnable / wall |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for backend, p in record["processes"].items():
        w = p["process"]
        runnable = w.get("runnable_per_wall")
        lines.append(
            f"| {backend} | {' '.join(map(str, p['cpus'] or []))} | {w['wall']:.1f} | "
            f"{w['cpu']:.1f} | {w['cpu_per_wall']:.2f} | "
            f"{'-' if runnable is None else f'{runnable:.2f}'} |"
        )
    lines += [
        "",
        "Each process is held to one CPU, so its CPU seconds count the work each step did; its wall "
        "seconds also count the time other jobs held that CPU (CPU / wall above), which varies "
        "from pass to pass. Where CPU / wall is well under 1, read the CPU ratio.",
    ]
    emas = {r["ema"] for r in record["results"] if r["model"] == "ddim"}
    if emas:
        lines += ["", f"DDIM's EMA update in the cf.Model: {', '.join(sorted(emas))}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
