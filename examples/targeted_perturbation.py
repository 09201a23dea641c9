"""
Title: A targeted perturbation through a frozen classifier
Author: customfit
Description: Train a digit classifier, then find for each of 100 digits a small change of its
    pixels that makes the classifier answer a chosen wrong label, by training the change itself.
Shows: a model whose only trained weight is the perturbation, and `cf.frozen`: the classifier's
    weights get no gradient and no update, while gradients still flow through it to its input.
Run: KERAS_BACKEND=jax python examples/targeted_perturbation.py   (tensorflow and torch too;
    CUSTOMFIT_QUICK=1 for a brief run)
"""

"""
## Setup
"""

import os

import keras
import numpy as np
from keras import ops
from sklearn.datasets import load_digits

import customfit as cf

QUICK = os.environ.get("CUSTOMFIT_QUICK") == "1"
keras.utils.set_random_seed(0)

digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target.astype("int32")
x_train, y_train, x_attack, y_attack = x[:1500], y[:1500], x[1500:1600], y[1500:1600]

"""
## The classifier: a plain cross-entropy objective
"""


class Classifier(cf.Model):
    def __init__(self):
        super().__init__()
        self.net = keras.Sequential(
            [keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)]
        )

    def call(self, x, training=False):
        return self.net(x, training=training)

    def objective(self, data, training=True):
        x, y = data
        logits = self(x, training=training)
        return ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


classifier = Classifier()
classifier.compile(optimizer=keras.optimizers.Adam(1e-3))
n = 320 if QUICK else len(x_train)  # a brief run: a fifth of the data, two epochs
classifier.fit(x_train[:n], y_train[:n], epochs=2 if QUICK else 30, batch_size=32, verbose=0)
accuracy = np.mean(np.argmax(classifier.predict(x_attack, verbose=0), axis=1) == y_attack)
print(f"classifier accuracy on the 100 digits to attack: {accuracy:.2f}")

"""
## The attack: the perturbation is the model's weight

Each digit gets a target label (its own plus one to nine, modulo ten). The objective is the
cross-entropy towards the targets plus a price on the perturbation's size; the perturbed image
stays in [0, 1]. The classifier sits inside `cf.frozen`, so fit() trains the perturbation alone.
"""


class Perturbation(cf.Model):
    def __init__(self, classifier, shape, price=0.05):
        super().__init__()
        self.classifier = classifier
        self.delta = self.add_weight(shape=shape, initializer="zeros", name="delta")
        self.price = price

    def objective(self, data, training=True):
        x, target = data
        with cf.frozen(self.classifier):
            logits = self.classifier(ops.clip(x + self.delta, 0.0, 1.0))
        size = ops.sqrt(ops.sum(ops.square(self.delta), axis=1) + 1e-12)
        hit = ops.cast(ops.argmax(logits, axis=1) == ops.cast(target, "int32"), "float32")
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            target, logits, from_logits=True
        )
        return {
            "loss": ops.mean(cross_entropy + self.price * size),
            "success": ops.mean(hit),
            "l2": ops.mean(size),
        }


targets = ((y_attack + 1 + np.arange(100) % 9) % 10).astype("int32")
weights_before = [w.copy() for w in classifier.get_weights()]
attack = Perturbation(classifier, x_attack.shape)
attack.compile(optimizer=keras.optimizers.Adam(0.02))
# The whole set is one batch, in order: row i of the perturbation belongs to digit i.
history = attack.fit(
    x_attack, targets, epochs=10 if QUICK else 300, batch_size=100, shuffle=False, verbose=0
)

"""
## The result

The share of digits the classifier now reads as their target, the mean size of the change, and a
check that the frozen classifier did not move.
"""

x_adv = np.clip(x_attack + ops.convert_to_numpy(attack.delta), 0.0, 1.0)
success = float(np.mean(np.argmax(classifier.predict(x_adv, verbose=0), axis=1) == targets))
l2 = float(np.mean(np.linalg.norm(x_adv - x_attack, axis=1)))
unchanged = all(np.array_equal(a, b) for a, b in zip(weights_before, classifier.get_weights()))
print(
    f"targeted success {success:.2f}, mean L2 of the change {l2:.2f} (image norm "
    f"{np.mean(np.linalg.norm(x_attack, axis=1)):.2f}); classifier unchanged: {unchanged}"
)
bar = 0.5 if QUICK else 0.95
assert unchanged, "the frozen classifier's weights changed"
assert success >= bar, f"targeted success {success:.2f} is below {bar}"
