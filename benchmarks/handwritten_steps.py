"""The toy classifier with a hand-written train_step per backend, as keras-io's guides
"Customizing what happens in fit()" write it: the baseline cf.Model is measured against.
The same work as cf.Model's step: a forward pass, the cross-entropy, its gradient, one Adam
update, and a batch-size-weighted mean of loss and accuracy."""

import keras
from keras import ops as K


def network():
    return keras.Sequential(
        [
            keras.layers.Dense(10, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(5),
        ]
    )


def loss_and_accuracy(y, logits):
    loss = K.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    hits = K.equal(K.argmax(logits, axis=-1), K.cast(y, "int32"))
    return loss, K.mean(K.cast(hits, "float32"))


class _Base(keras.Model):
    def __init__(self):
        super().__init__()
        self.network = network()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    def call(self, x, training=False):
        return self.network(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]


def handwritten_model():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        class TensorFlowModel(_Base):
            def train_step(self, data):
                x, y = data
                with tf.GradientTape() as tape:
                    loss, accuracy = loss_and_accuracy(y, self(x, training=True))
                grads = tape.gradient(loss, self.trainable_variables)
                self.optimizer.apply(grads, self.trainable_variables)
                n = K.shape(x)[0]
                self.loss_tracker.update_state(loss, sample_weight=n)
                self.accuracy_tracker.update_state(accuracy, sample_weight=n)
                return {m.name: m.result() for m in self.metrics}

        return TensorFlowModel()

    if backend == "torch":
        import torch

        class TorchModel(_Base):
            def train_step(self, data):
                x, y = data
                self.zero_grad()
                loss, accuracy = loss_and_accuracy(y, self(x, training=True))
                loss.backward()
                grads = [v.value.grad for v in self.trainable_weights]
                with torch.no_grad():
                    self.optimizer.apply(grads, self.trainable_weights)
                n = K.shape(x)[0]
                self.loss_tracker.update_state(loss.detach(), sample_weight=n)
                self.accuracy_tracker.update_state(accuracy, sample_weight=n)
                return {m.name: m.result() for m in self.metrics}

        return TorchModel()

    import jax

    class JaxModel(_Base):
        def compute(self, trainable, non_trainable, x, y):
            logits, non_trainable = self.stateless_call(trainable, non_trainable, x, training=True)
            loss, accuracy = loss_and_accuracy(y, logits)
            return loss, (accuracy, non_trainable)

        def train_step(self, state, data):
            trainable, non_trainable, optimizer_vars, metric_vars = state
            x, y = data
            (loss, (accuracy, non_trainable)), grads = jax.value_and_grad(
                self.compute, has_aux=True
            )(trainable, non_trainable, x, y)
            trainable, optimizer_vars = self.optimizer.stateless_apply(
                optimizer_vars, grads, trainable
            )
            n = K.shape(x)[0]
            new_metric_vars = []
            logs = {}
            offset = 0
            for tracker, value in ((self.loss_tracker, loss), (self.accuracy_tracker, accuracy)):
                count = len(tracker.variables)
                mine = metric_vars[offset : offset + count]
                mine = tracker.stateless_update_state(mine, value, sample_weight=n)
                logs[tracker.name] = tracker.stateless_result(mine)
                new_metric_vars += mine
                offset += count
            return logs, (trainable, non_trainable, optimizer_vars, new_metric_vars)

    return JaxModel()
