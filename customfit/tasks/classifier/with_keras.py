"""The classifier as a cf.Model: its objective is written once, with keras.ops, and fit() trains
it on whichever Keras backend this process runs (the keras-tensorflow, keras-torch and
keras-jax engines). Compare with_tensorflow.py, with_torch.py and with_flax.py: the same
cross-entropy, there inside a hand-written step, here as the model's `objective`."""

import keras
import numpy as np
from keras import ops as K

import customfit as cf
from customfit.core.model import build_train_step
from customfit import precision
from customfit.tasks.classifier import layout
from customfit.trainers import canonical
from customfit.trainers.keras_trainer import KerasTrainer


# --8<-- [start:model]
def build_network(layers, input_shape):
    """A keras.Sequential from the architecture tuples (see architectures.py)."""
    network = keras.Sequential([keras.Input(shape=tuple(input_shape))], name="network")
    for layer in layers:
        kind = layer[0]
        if kind == "dense":
            network.add(keras.layers.Dense(layer[1], activation=layer[2]))
        elif kind == "conv":
            _, filters, kernel, padding, activation = layer
            network.add(
                keras.layers.Conv2D(filters, kernel, padding=padding, activation=activation)
            )
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


# --8<-- [end:model]


# --8<-- [start:objective]
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


# --8<-- [end:objective]


# --8<-- [start:step]
class Trainer(KerasTrainer):
    """The classifier compiled with Adam, and fit() an epoch at a time."""

    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        self._shapes = layout.canonical_shapes(layers, input_shape, num_classes)
        super().__init__(seed, devices)
        with self.parallel.scope():
            self.model = Classifier(layers, input_shape)
            self.model.compile(
                optimizer=keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
            )
            build_train_step(
                self.model, (np.zeros((1, *input_shape), "float32"), np.zeros((1,), "int64"))
            )

    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        return self.fit_epoch(self.model, (x, y), batch_size, shuffle_seed, on_batch)

    # --8<-- [end:step]

    def evaluate(self, x, y, batch_size):
        return self.evaluate_model(self.model, (x, y), batch_size)

    def predict_proba(self, x):
        logits = self.model.predict(x, batch_size=512, verbose=0)
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1)))

    # ---- weights, the parity hook, state: Keras's layout is the canonical one (weights.py)

    def get_weights(self):
        return canonical.to_canonical(self.engine, self.model.network.get_weights())

    def set_weights(self, weights):
        canonical.check_shapes(self._shapes, weights)
        self.model.network.set_weights(canonical.from_canonical(self.engine, weights))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: mean cross-entropy and its gradients on batch (x, y) at the current
        weights, no update. The classifier draws no noise."""
        x, y = batch
        loss, grads = self.value_and_grads(
            lambda x, y: self.model.objective((x, y))["loss"],
            self.model.trainable_variables,
            K.convert_to_tensor(x),
            K.convert_to_tensor(y),
        )
        return loss, canonical.to_canonical(self.engine, grads)

    def state(self):
        first, second, step = self.adam_state(self.model.optimizer, self.model.trainable_variables)
        arrays = canonical.pack_adam_state(self.get_weights(), first, second, step)
        return arrays, {"format": canonical.STATE_FORMAT, "engine": self.engine}

    def load_state(self, arrays, meta):
        canonical.check_state_meta(meta)
        weights, first, second, step = canonical.unpack_adam_state(arrays, self._shapes)
        self.set_weights(weights)
        self.load_adam_state(
            self.model.optimizer, self.model.trainable_variables, first, second, step
        )
