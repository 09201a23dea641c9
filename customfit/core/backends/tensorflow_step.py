"""TensorFlow: a GradientTape per update, inside the tf.function Keras builds around train_step."""

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.trainer import _collective_all_reduce_multi_worker
from keras.src.losses.loss import scale_loss_for_distribution

from customfit.core.plan import build, plan_of
from customfit.core.scopes import record_frozen
from customfit.core.step_plan import run_objective, scaled_loss, unpack


def value_and_grad(fn, args, argnums):
    args = [tf.convert_to_tensor(a) if i in argnums else a for i, a in enumerate(args)]
    # An enclosing tape (the train step's) records this one's gradient computation too,
    # which is what makes a gradient penalty trainable.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for i in argnums:
            tape.watch(args[i])
        value, aux = fn(*args)
    grads = tape.gradient(
        value, [args[i] for i in argnums], unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return value, aux, grads


Mean = keras.metrics.Mean


class Step(keras.Model):
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras's TF trainer defers building to the first trace; cf.Model builds up front (its
        # metric trackers must exist before tracing), from the dataset's element spec so that
        # no batch is consumed.
        if plan_of(self) is not None:
            # Built already: asking the adapter for its dataset's spec would build a whole tf.data
            # pipeline (a copy of the arrays) on every fit()/evaluate() call, which made a short
            # fit() 15% slower than stock Keras's.
            return
        if data_batch is None and iterator is not None:
            spec = iterator.data_adapter.get_tf_dataset().element_spec
            data_batch = keras.tree.map_structure(
                lambda s: keras.KerasTensor(s.shape, s.dtype.name), spec
            )
        # Under tf.distribute the trackers' and optimizers' variables must be made in the
        # strategy's scope, as Keras's own trainer builds there.
        with self.distribute_strategy.scope():
            build(self, data_batch)

    def train_step(self, data):
        plan = plan_of(self)
        data = unpack(data)
        for update in plan.updates:
            for _ in range(update.repeat):
                with record_frozen() as frozen_ids, tf.GradientTape() as tape:
                    entries = run_objective(update, data, training=True)
                    # Under tf.distribute the replicas' gradients are summed; the objective is a
                    # mean over one replica's share of the batch: scaled as Keras's losses are.
                    loss = scale_loss_for_distribution(entries["loss"])
                    loss = scaled_loss(update, loss)
                grads = tape.gradient(loss, update.variables)
                plan.apply(update, grads, frozen_ids)
                plan.record(update, entries, data)
        if plan.after_step:
            plan.after_step()
        plan.count_step()
        return self._across_workers(plan.logs())

    def test_step(self, data):
        return self._across_workers(plan_of(self).stateful_test_step(data))

    def _across_workers(self, logs):
        # Under MultiWorkerMirroredStrategy Keras averages each log with strategy.reduce("MEAN",
        # axis=0), which a scalar has no axis for ("Invalid reduction dimension 0"): each log
        # goes out as a vector of one, and comes back from the reduction a scalar.
        if not _collective_all_reduce_multi_worker(self.distribute_strategy):
            return logs
        return {k: tf.reshape(v, [1]) if v.shape.rank == 0 else v for k, v in logs.items()}
