"""What the run loop asks of a task's spec and of every engine's Trainer.

The run loop (customfit.engines.loop) and the run path (customfit.runs) know no task: they
train, checkpoint, resume, judge and write through the two contracts below. All arrays crossing
these boundaries are NumPy.

A task's spec (customfit/tasks/<task>/spec.py) is a module holding:

    NAME, FAMILY, SUMMARY        its name, the family whose engine files it uses, one line
    JUDGE                        one line: what the judge measures
    MODELS                       model name -> what the family's Trainer builds from
    DEFAULTS                     epochs, batch_size, lr, seed, model
    MODEL_DEFAULTS (optional)    model name -> settings that differ for that model
    training_defaults(options) -> dict   (optional)
                                 settings that follow the task's options (score: each --method
                                 its own epochs); customfit.registry.defaults applies them
    OPTIONS                      option name -> customfit.options.Option (may be empty)
    HEADLINE                     the metric a table shows first ("accuracy", "success_rate")
    load() -> Split              the data (customfit.data.Split)
    bars(settings) -> dict       metric -> minimum, or metric -> ("<=", maximum)
    build_trainer(Trainer, split, settings) -> trainer
    produce(trainer, split, settings, verbose) -> dict of NumPy arrays
                                 what the trained model produces for the judge (probabilities,
                                 perturbed images, samples); the only place the spec asks the
                                 trainer for anything after training
    judge(outputs, split, settings) -> dict of floats
                                 computed with NumPy from `outputs` alone: shares no code with any
                                 engine
    write(outputs, trainer, split, history, out, title) -> dict name -> path
                                 figures and files for outside tools (perturbations.npz, ...)
    after_epoch(trainer, settings, epoch, out)   (optional)
                                 called after each epoch's checkpoint, e.g. to keep a sample grid
                                 per epoch for an animation (write files under `out`)
    start_from(options, engine) -> None | (arrays, meta)   (optional)
                                 another run's checkpoint to start from instead of training
                                 (adversarial --from): its weights and its training settings
    START_OPTION (optional)      the option naming the run folder start_from reads ("from_run"):
                                 its errors and Result.started_from name it
    references(settings) -> dict name -> dict of floats   (optional)
                                 the judge's figures for what to compare a run with (real data, a
                                 simple baseline, the lecture's own model): printed beside the
                                 run's figures and kept in metrics.json as "references"
    default_data() -> None | path | arrays   (optional)
                                 the data when --data is not given, where it lives outside the
                                 package (mnist: Keras's cache); None: load()'s built-in data
    read_data(data) -> Split     (optional) data given in the task's own layout (mnist's IDX
                                 folder, uint8); else customfit.validate checks an .npz
    INPUT_SHAPE, NUM_CLASSES     (optional) what data given must hold (None: not checked)
    BARS_BY_METHOD (optional)    --method -> bars, for a task whose bars follow its method
                                 (`customfit list` shows them per method)
    parity_inputs(...)           (optional) the inputs of the parity probe (customfit.parity)

A hook left out has the default in OPTIONAL below; customfit.registry.hook(spec, name) gives the
spec's or the default, so that no other code probes a spec.

`settings` is the run's config: epochs, batch_size, lr, seed, model, data, and the task's options;
with `--devices N` (N > 1) also devices, which the families in customfit.devices.FAMILIES hand
their Trainers as `devices=N` (see customfit/devices.py for what that asks of a Trainer).
"""

from typing import Callable, Protocol

import numpy as np

# The optional part of the spec contract: name -> what a spec that leaves it out has.
OPTIONAL = {
    "MODEL_DEFAULTS": {},
    "training_defaults": lambda options: {},
    "OPTIONS": {},
    "after_epoch": None,
    "start_from": lambda options, engine: None,
    "START_OPTION": None,
    "references": lambda settings: {},
    "default_data": lambda: None,
    "read_data": None,
    "INPUT_SHAPE": None,
    "NUM_CLASSES": None,
    "BARS_BY_METHOD": None,
    "parity_inputs": None,
}


class Trainer(Protocol):
    """One framework's networks and optimizers for one task family (several of each where the
    family needs them: a GAN's generator and discriminator, each with its optimizer). Built by the
    spec's build_trainer; the constructor's arguments are the family's business."""

    def train_epoch(
        self,
        *arrays: np.ndarray,
        batch_size: int,
        shuffle_seed: int,
        on_batch: Callable[[dict], None],
    ) -> dict:
        """One pass over the training arrays (split.train: (x, y) for a classifier, (x,) for a
        generative model), shuffled by `shuffle_seed` in the framework's own idiom. Calls
        on_batch({name: running mean}) after every batch; returns the epoch's means as floats.
        The names are the family's (loss, accuracy; dis_loss, gen_loss; ...)."""

    def evaluate(self, *arrays: np.ndarray, batch_size: int) -> dict:
        """The same means on the held-out arrays (split.test), in inference mode; the history
        records them with a val_ prefix."""

    def state(self) -> tuple:
        """(arrays, meta): everything a resumed run needs, every network's weights and every
        optimizer's slots, as a flat dict name -> np.ndarray, plus JSON-able meta. No pickle."""

    def load_state(self, arrays: dict, meta: dict) -> None: ...

    def get_weights(self):
        """The networks' weights in the family's canonical layout (for parity tests)."""

    def set_weights(self, weights) -> None: ...

    def objective_and_grads(self, batch: tuple, noise=None) -> tuple:
        """The parity hook: (the training objective's value as a float, its gradients in the
        family's canonical layout) for one batch at the current weights, with `noise` (the
        random draws the objective would otherwise make itself: latents, dropout, probes) given
        from outside so that every engine computes the same number. No update."""
