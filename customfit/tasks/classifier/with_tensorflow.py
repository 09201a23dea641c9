"""The classifier in TensorFlow: tf.keras layers, tf.GradientTape, @tf.function and tf.data.

This is the lecture's TensorFlow workflow: Keras only builds the layers; the training step is
written by hand, so any objective could stand where the cross-entropy is. Read top to bottom: the
model, the objective, the step (on one device, and on N replicas as TensorFlow's guide "Custom
training with tf.distribute.Strategy" writes it) and the epoch loop. The plumbing (the seed, the
replicas, checkpoint arrays, the parity hook's gradients) is in customfit/trainers/.
"""

import tensorflow as tf

from customfit import precision
from customfit.tasks.classifier import layout
from customfit.trainers import canonical
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.tensorflow_trainer import ENGINE, TensorFlowTrainer

FIGURES = ("loss", "accuracy")


# --8<-- [start:model]
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
            model.add(
                tf.keras.layers.Conv2D(filters, kernel, padding=padding, activation=activation)
            )
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


# --8<-- [end:model]


# --8<-- [start:objective]
def cross_entropy(labels, logits):
    # On logits, never log(softmax): TF fuses the two stably.
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def correct_count(labels, logits):
    predicted = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.int32))


# --8<-- [end:objective]


class Trainer(TensorFlowTrainer):
    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        super().__init__(seed, devices)
        self.shapes = layout.canonical_shapes(layers, input_shape, num_classes)
        with self.strategy.scope():
            self.model = build_model(layers, input_shape)
            # Under mixed_float16 (a GPU), Keras's LossScaleOptimizer around Adam.
            self.optimizer = precision.loss_scaled(
                tf.keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
            )
            # The Adam moments now rather than at the first step, so load_state can fill them.
            self.optimizer.build(self.model.trainable_variables)

    # --8<-- [start:step]
    # reduce_retracing: the last, shorter batch reuses the trace instead of making a new one.
    @tf.function(reduce_retracing=True)
    def train_step(self, x, y):  # customfit/bench/modes.py traces it again with XLA
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = cross_entropy(y, logits)
            # The identity, but under a LossScaleOptimizer, which unscales in apply_gradients.
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss, correct_count(y, logits)

    # The same step on N replicas: each replica's loss is its share of the global batch's mean
    # (compute_average_loss), the optimizer sums the replicas' gradients.
    @tf.function(reduce_retracing=True)
    def distributed_train_step(self, x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                logits = self.model(x, training=True)
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=y, logits=logits
                )
                loss = tf.nn.compute_average_loss(per_example)
                scaled = self.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
            return loss, correct_count(y, logits)

        return self.on_replicas(replica_step, x, y, reduce=tf.distribute.ReduceOp.SUM)

    @tf.function(reduce_retracing=True)
    def eval_step(self, x, y):
        logits = self.model(x, training=False)
        return cross_entropy(y, logits), correct_count(y, logits)

    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        dataset = self.seeded_shuffle((x, y), shuffle_seed)
        step = self.train_step if self.devices == 1 else self.distributed_train_step
        means = RunningMeans(FIGURES)
        for x_batch, y_batch in self.batches(dataset, len(x), batch_size):
            loss, correct = step(x_batch, y_batch)
            n = int(self.global_rows(y_batch))
            means.add("loss", loss, n)
            means.add_total("accuracy", correct, n)
            on_batch(means.means())
        return means.means()

    def evaluate(self, x, y, batch_size):
        means = RunningMeans(FIGURES)
        for x_batch, y_batch in tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size):
            loss, correct = self.eval_step(x_batch, y_batch)
            means.add("loss", loss, x_batch.shape[0])
            means.add_total("accuracy", correct, x_batch.shape[0])
        return means.means()

    # --8<-- [end:step]

    def predict_proba(self, x):
        logits = self.model(tf.convert_to_tensor(x), training=False)
        return tf.nn.softmax(logits).numpy()

    # ---- weights, the parity hook, state: canonical (customfit/trainers/canonical.py), as tf.keras's are

    def get_weights(self):
        return canonical.to_canonical(ENGINE, self.model.get_weights())

    def set_weights(self, weights):
        canonical.check_shapes(self.shapes, weights)
        self.model.set_weights(canonical.from_canonical(ENGINE, weights))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: mean cross-entropy and its gradients (Keras's layout) on batch
        (x, y) at the current weights, no update. The classifier draws no noise."""
        x, y = (tf.convert_to_tensor(a) for a in batch)
        loss, grads = self.loss_and_gradients(
            lambda: cross_entropy(y, self.model(x, training=True)), self.model.trainable_variables
        )
        return loss, canonical.to_canonical(ENGINE, grads)

    def state(self):
        first, second, step = self.adam_moments(self.optimizer, self.model.trainable_variables)
        arrays = canonical.pack_adam_state(
            self.get_weights(),
            canonical.to_canonical(ENGINE, first),
            canonical.to_canonical(ENGINE, second),
            step,
        )
        return arrays, {"format": canonical.STATE_FORMAT, "engine": ENGINE}

    def load_state(self, arrays, meta):
        canonical.check_state_meta(meta)
        weights, first, second, step = canonical.unpack_adam_state(arrays, self.shapes)
        self.set_weights(weights)
        self.load_adam_moments(
            self.optimizer,
            self.model.trainable_variables,
            canonical.from_canonical(ENGINE, first),
            canonical.from_canonical(ENGINE, second),
            step,
        )
