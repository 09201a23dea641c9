"""The classifier as a cf.Model: its objective is written once, with keras.ops, and fit() trains
it on whichever Keras backend this process runs (the keras-tensorflow, keras-torch and
keras-jax engines). Compare with_tensorflow.py, with_torch.py and with_flax.py: the same
cross-entropy, there inside a hand-written step, here as the model's `objective`."""

import keras
import numpy as np
from keras import ops as K

import customfit as cf
from customfit import precision, weights as layout
from customfit.parallel.keras_fit import DataParallel


def build_network(layers, input_shape):
    """A keras.Sequential from the architecture tuples (see architectures.py)."""
    network = keras.Sequential([keras.Input(shape=tuple(input_shape))], name="network")
    for layer in layers:
        kind = layer[0]
        if kind == "dense":
            network.add(keras.layers.Dense(layer[1], activation=layer[2]))
        elif kind == "conv":
            _, filters, kernel, padding, activation = layer
            network.add(keras.layers.Conv2D(filters, kernel, padding=padding, activation=activation))
        elif kind == "maxpool":
            network.add(keras.layers.MaxPooling2D(layer[1]))
        elif kind == "flatten":
            network.add(keras.layers.Flatten())
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    if precision.mixed():
        # Keras's mixed-precision guide: the output in float32, so that softmax and the loss are.
        network.add(keras.layers.Activation("linear", dtype="float32"))
    return network


class Classifier(cf.Model):
    def __init__(self, layers, input_shape):
        super().__init__()
        self.network = build_network(layers, input_shape)

    def call(self, x, training=False):
        return self.network(x, training=training)

    def objective(self, data, training=True):
        x, y = data
        logits = self(x, training=training)
        loss = K.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        hits = K.equal(K.argmax(logits, axis=-1), K.cast(y, "int32"))
        return {"loss": loss, "accuracy": K.mean(K.cast(hits, "float32"))}


class _Progress(keras.callbacks.Callback):
    def __init__(self, on_batch):
        super().__init__()
        self.on_batch = on_batch

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch({k: float(v) for k, v in (logs or {}).items()})


class Trainer:
    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        self.engine = f"keras-{keras.backend.backend()}"
        self._shapes = layout.canonical_shapes(layers, input_shape, num_classes)
        # One device, or the backend's own data parallelism (customfit/parallel/keras_fit.py).
        self.parallel = DataParallel(devices)
        keras.utils.set_random_seed(seed)
        with self.parallel.scope():
            self.model = Classifier(layers, input_shape)
            self.model.compile(
                optimizer=keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7))
            # Build the step (trackers, optimizer slots) now, so that load_state has them to fill.
            probe = np.zeros((1, *input_shape), "float32"), np.zeros((1,), "int64")
            self.model._symbolic_build(data_batch=probe)

    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        # fit() shuffles from Keras's global random state; the permutation from shuffle_seed
        # makes an epoch's batches a function of the seed alone, so a resumed run repeats them.
        order = self.parallel.epoch_order(np.random.default_rng(shuffle_seed).permutation(len(x)),
                                            batch_size)
        with self.parallel.scope():
            history = self.model.fit(
                x[order], y[order], batch_size=self.parallel.batch_size(batch_size), epochs=1,
                shuffle=False, verbose=0, callbacks=[_Progress(on_batch)],
            )
        return self.parallel.means_over_devices({k: float(v[-1]) for k, v in history.history.items()})

    def evaluate(self, x, y, batch_size):
        result = self.model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        return {k: float(v) for k, v in result.items()}

    def predict_proba(self, x):
        logits = self.model.predict(x, batch_size=512, verbose=0)
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1)))

    def get_weights(self):
        return layout.to_canonical(self.engine, self.model.network.get_weights())

    def set_weights(self, weights):
        layout.check_shapes(self._shapes, weights)
        self.model.network.set_weights(layout.from_canonical(self.engine, weights))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: mean cross-entropy and its gradients (Keras's layout) on batch
        (x, y) at the current weights, no update. The classifier draws no noise."""
        x, y = batch
        variables = self.model.trainable_variables

        def loss_of(*values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return self.model.objective((K.convert_to_tensor(x), K.convert_to_tensor(y)))["loss"]

        argnums = tuple(range(len(variables)))
        loss, grads = cf.ops.value_and_grad(loss_of, argnums=argnums)(*[v.value for v in variables])
        grads = [np.asarray(K.convert_to_numpy(g)) for g in grads]
        return float(K.convert_to_numpy(loss)), layout.to_canonical(self.engine, grads)

    def state(self):
        momentums, velocities = layout.keras_adam_slots(
            self.model.optimizer, self.model.trainable_variables
        )
        numpy = lambda vs: [np.asarray(K.convert_to_numpy(v.value)) for v in vs]  # noqa: E731
        arrays = layout.pack_adam_state(
            self.get_weights(), numpy(momentums), numpy(velocities),
            int(K.convert_to_numpy(self.model.optimizer.iterations.value)),
        )
        return arrays, {"format": layout.STATE_FORMAT, "engine": self.engine}

    def load_state(self, arrays, meta):
        layout.check_state_meta(meta)
        weights, first, second, step = layout.unpack_adam_state(arrays, self._shapes)
        self.set_weights(weights)
        momentums, velocities = layout.keras_adam_slots(
            self.model.optimizer, self.model.trainable_variables
        )
        for variable, value in zip(momentums + velocities, first + second):
            variable.assign(value)
        self.model.optimizer.iterations.assign(step)
