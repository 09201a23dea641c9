"""The classifier in TensorFlow: tf.keras layers, tf.GradientTape, @tf.function and tf.data.

This is the lecture's TensorFlow workflow: Keras only builds the layers; the training step is
written by hand, so any objective could stand where the cross-entropy is.
"""

import tensorflow as tf

from customfit import precision, weights as layout
from customfit.engines.native_checks import require_tensorflow_backend
from customfit.tasks.classifier.tally import Tally
from customfit.trainers.keras_adam import keras_adam_slots

ENGINE = "tensorflow"


def build_model(layers, input_shape):
    """A tf.keras.Sequential from the architecture tuples (see architectures.py)."""
    model = tf.keras.Sequential([tf.keras.Input(shape=tuple(input_shape))])
    for layer in layers:
        kind = layer[0]
        if kind == "dense":
            _, units, activation = layer
            model.add(tf.keras.layers.Dense(units, activation=activation))
        elif kind == "conv":
            _, filters, kernel, padding, activation = layer
            model.add(tf.keras.layers.Conv2D(filters, kernel, padding=padding,
                                             activation=activation))
        elif kind == "maxpool":
            model.add(tf.keras.layers.MaxPooling2D(layer[1]))
        elif kind == "flatten":
            model.add(tf.keras.layers.Flatten())
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    if precision.mixed():
        # Keras's mixed-precision guide: the output in float32, so that softmax and the loss are.
        model.add(tf.keras.layers.Activation("linear", dtype="float32"))
    return model


def cross_entropy(labels, logits):
    # On logits, never log(softmax): TF fuses the two stably.
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


class Trainer:
    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        require_tensorflow_backend()
        self._shapes = layout.canonical_shapes(layers, input_shape, num_classes)
        # One device, or N replicas of a MirroredStrategy: the model and optimizer are made in
        # its scope (mirrored variables), and each batch is split over the replicas.
        self.devices = devices
        self.strategy = tf.distribute.get_strategy() if devices == 1 else _mirrored(devices)
        # Keras's initializers draw from the global seed: set it, and the weights follow `seed`.
        tf.keras.utils.set_random_seed(seed)
        with self.strategy.scope():
            self.model = build_model(layers, input_shape)
            # Under mixed_float16 (a GPU), Keras's LossScaleOptimizer around Adam.
            self.optimizer = precision.loss_scaled(
                tf.keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7))
            # The Adam moments now rather than at the first step, so load_state can fill them.
            self.optimizer.build(self.model.trainable_variables)

    # reduce_retracing: the last, shorter batch reuses the trace instead of making a new one.
    @tf.function(reduce_retracing=True)
    def _train_step(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = cross_entropy(y, logits)
            # The identity, but under a LossScaleOptimizer, which unscales in apply_gradients.
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss, _correct(y, logits)

    # The same step on N replicas, as TensorFlow's guide "Custom training with
    # tf.distribute.Strategy" writes it: each replica's loss is its share of the global batch's
    # mean (compute_average_loss), the optimizer sums the replicas' gradients.
    @tf.function(reduce_retracing=True)
    def _distributed_train_step(self, x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                logits = self.model(x, training=True)
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                             logits=logits)
                loss = tf.nn.compute_average_loss(per_example)
                scaled = self.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
            return loss, _correct(y, logits)

        loss, correct = self.strategy.run(replica_step, args=(x, y))
        total = tf.distribute.ReduceOp.SUM
        return self.strategy.reduce(total, loss, None), self.strategy.reduce(total, correct, None)

    @tf.function(reduce_retracing=True)
    def _eval_step(self, x, y):
        logits = self.model(x, training=False)
        return cross_entropy(y, logits), _correct(y, logits)

    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        # A seeded shuffle's order also depends on TF's global seed: pin it, so that the order is
        # a function of shuffle_seed alone and a resumed run sees the same batches.
        tf.random.set_seed(shuffle_seed)
        dataset = (tf.data.Dataset.from_tensor_slices((x, y))
                   .shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=False))
        tally = Tally()
        if self.devices == 1:
            for x_batch, y_batch in dataset.batch(batch_size):
                loss, correct = self._train_step(x_batch, y_batch)
                tally.add(loss, correct, x_batch.shape[0])
                on_batch(tally.means())
            return tally.means()
        # Every global batch splits evenly over the replicas (customfit/devices.py).
        dataset = dataset.take(len(x) - len(x) % self.devices).batch(batch_size)
        for x_batch, y_batch in self.strategy.experimental_distribute_dataset(dataset):
            loss, correct = self._distributed_train_step(x_batch, y_batch)
            # The replicas hold equal shares; across hosts only this worker's are local.
            share = self.strategy.experimental_local_results(y_batch)[0]
            tally.add(loss, correct, int(share.shape[0]) * self.strategy.num_replicas_in_sync)
            on_batch(tally.means())
        return tally.means()

    def evaluate(self, x, y, batch_size):
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        tally = Tally()
        for x_batch, y_batch in dataset:
            loss, correct = self._eval_step(x_batch, y_batch)
            tally.add(loss, correct, x_batch.shape[0])
        return tally.means()

    def predict_proba(self, x):
        logits = self.model(tf.convert_to_tensor(x), training=False)
        return tf.nn.softmax(logits).numpy()

    def get_weights(self):
        return layout.to_canonical(ENGINE, self.model.get_weights())

    def set_weights(self, weights):
        layout.check_shapes(self._shapes, weights)
        self.model.set_weights(layout.from_canonical(ENGINE, weights))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: mean cross-entropy and its gradients (Keras's layout) on batch
        (x, y) at the current weights, no update. The classifier draws no noise."""
        x, y = batch
        with tf.GradientTape() as tape:
            loss = cross_entropy(tf.convert_to_tensor(y),
                                 self.model(tf.convert_to_tensor(x), training=True))
        grads = tape.gradient(loss, self.model.trainable_variables)
        return float(loss), layout.to_canonical(ENGINE, [g.numpy() for g in grads])

    def _moments(self):
        return keras_adam_slots(self.optimizer, self.model.trainable_variables)

    def state(self):
        momentums, velocities = self._moments()
        arrays = layout.pack_adam_state(
            self.get_weights(),
            layout.to_canonical(ENGINE, [m.numpy() for m in momentums]),
            layout.to_canonical(ENGINE, [v.numpy() for v in velocities]),
            int(self.optimizer.iterations.numpy()))
        return arrays, {"format": layout.STATE_FORMAT, "engine": ENGINE}

    def load_state(self, arrays, meta):
        layout.check_state_meta(meta)
        weights, first, second, step = layout.unpack_adam_state(arrays, self._shapes)
        self.set_weights(weights)
        momentums, velocities = self._moments()
        for variable, value in zip(momentums, layout.from_canonical(ENGINE, first)):
            variable.assign(value)
        for variable, value in zip(velocities, layout.from_canonical(ENGINE, second)):
            variable.assign(value)
        self.optimizer.iterations.assign(step)


def _correct(labels, logits):
    predicted = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.int32))


def _mirrored(devices):
    from customfit.parallel import mirrored

    return mirrored.strategy(devices)
