"""Stock Keras: the same network compiled with compile(loss=..., metrics=["accuracy"]) and trained
by Keras's own train_step, behind the same train_epoch as the keras-* engines' Trainer (the same
permutation, the same per-batch progress callback), so that the two differ in their step alone."""

import keras
import numpy as np

from customfit.tasks.classifier.with_keras import build_network
from customfit.trainers.keras_trainer import Progress


class StockTrainer:
    def __init__(self, layers, input_shape, num_classes, lr, seed):
        keras.utils.set_random_seed(seed)
        self.model = build_network(layers, input_shape)
        self.model.compile(
            optimizer=keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        history = self.model.fit(
            x[order],
            y[order],
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[Progress(on_batch)],
        )
        return {k: float(v[-1]) for k, v in history.history.items()}
