"""A Keras metric the model keeps (AUC, a Sum, a Mean), updated in the objective and returned
(itself or its result()), is reported as Keras reports compiled metrics: the epoch's and
evaluate()'s accumulated result, reset where Keras resets them; on every backend, compiled
and not."""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import ops as K

import customfit as cf

RNG = np.random.default_rng(0)
X = RNG.normal(size=(500, 4)).astype("float32")
Y = (X[:, 0] + 0.8 * RNG.normal(size=500) > 0).astype("float32")[:, None]


class Scorer(cf.Model):
    def __init__(self, returns):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.auc = keras.metrics.AUC(name="auc")
        self.seen = keras.metrics.Sum(name="seen")
        self.returns = returns

    def call(self, x):
        return self.dense(x)

    def objective(self, data, training=True):
        x, y = data
        logits = self(x)
        self.auc.update_state(y, K.sigmoid(logits))
        self.seen.update_state(K.cast(K.shape(x)[0], "float32"))
        loss = K.mean(keras.losses.binary_crossentropy(y, logits, from_logits=True))
        if self.returns == "metric":
            return {"loss": loss, "auc": self.auc, "seen": self.seen}
        return {"loss": loss, "auc": self.auc.result(), "seen": self.seen.result()}


@pytest.mark.parametrize(
    "returns, mode", [("metric", "compiled"), ("result", "compiled"), ("result", "eager")]
)
def test_a_kept_auc_reports_the_whole_sets_auc(returns, mode):
    model = Scorer(returns)
    model.compile(optimizer="adam", **({"run_eagerly": True} if mode == "eager" else {}))
    history = model.fit(X, Y, epochs=2, batch_size=50, verbose=0)
    # Reset at every epoch, as Keras resets its metrics: each epoch counts its own 500 samples.
    assert history.history["seen"] == [500.0, 500.0]
    logs = model.evaluate(X, Y, batch_size=50, return_dict=True, verbose=0)
    p = K.sigmoid(model.predict(X, batch_size=500, verbose=0))
    truth = keras.metrics.AUC()
    truth.update_state(Y, p)
    assert logs["auc"] == pytest.approx(float(to_numpy(truth.result())), abs=1e-6)
    assert logs["seen"] == 500.0  # evaluate() starts from zero too
    # Averaged over batches, as a plain entry would be, the figure lands off (0.85 vs 0.87).
    # Each prefix as weights over the whole set, not as a slice: one shape, so each of AUC's ops
    # compiles once on jax rather than once per prefix length.
    per_batch = []
    for i in range(0, 500, 50):
        truth.reset_state()
        truth.update_state(Y, p, sample_weight=(np.arange(500) < i + 50).astype("float32"))
        per_batch.append(float(to_numpy(truth.result())))
    assert abs(np.mean(per_batch) - logs["auc"]) > 1e-4


def test_a_metric_the_model_does_not_keep_is_one_clear_error():
    class Local(cf.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def objective(self, data, training=True):
            x, y = data
            auc = keras.metrics.AUC()
            auc.update_state(y, K.sigmoid(self.dense(x)))
            return {"loss": K.mean(self.dense(x) ** 2), "auc": auc}

    model = Local()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="which the model does not keep: make it an attribute"):
        model.fit(X, Y, epochs=1, verbose=0)


def test_a_metric_as_the_loss_is_one_clear_error():
    class MetricLoss(Scorer):
        def objective(self, data, training=True):
            x, y = data
            self.seen.update_state(K.mean(self(x) ** 2))
            return {"loss": self.seen.result()}

    model = MetricLoss("metric")
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="'loss' is the result of the metric 'seen'"):
        model.fit(X, Y, epochs=1, verbose=0)
