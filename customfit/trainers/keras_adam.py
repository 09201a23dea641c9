"""Keras's Adam's moments, found variable by variable: what a Trainer that keeps Keras optimizers
(the Keras engines, and the TensorFlow engines' keras.optimizers.Adam) writes to a checkpoint as
named arrays and loads back. Imports no framework: it reads the optimizer it is handed.
"""


def keras_adam_slots(optimizer, trainable):
    """(momentums, velocities) of a Keras Adam, one per variable of `trainable` (the variables the
    optimizer was built for, in that order).

    Found by name, not by place in optimizer.variables: with a learning-rate schedule Keras keeps
    no learning-rate variable, so the slots do not sit at fixed places. Under mixed_float16,
    Keras's LossScaleOptimizer wraps the Adam; its loss scale is no slot of the Adam
    (customfit/loss_scale_state.py keeps it). Checked rather than trusted silently.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    momentums = [v for v in optimizer.variables if v.path.endswith("_momentum")]
    velocities = [v for v in optimizer.variables if v.path.endswith("_velocity")]
    ok = len(momentums) == len(velocities) == len(trainable) and all(
        tuple(m.shape) == tuple(w.shape) == tuple(v.shape)
        for m, v, w in zip(momentums, velocities, trainable)
    )
    if not ok:
        raise RuntimeError(
            f"unexpected layout of Keras's Adam variables: {[v.path for v in optimizer.variables]}"
        )
    return momentums, velocities


def adam_slots_for(optimizer, built_for, wanted):
    """(momentums, velocities) of the variables `wanted`, in that order, from an Adam built for
    `built_for` (which holds them, in the order the optimizer made its slots)."""
    momentums, velocities = keras_adam_slots(optimizer, built_for)
    where = {id(v): i for i, v in enumerate(built_for)}
    order = [where[id(v)] for v in wanted]
    return [momentums[i] for i in order], [velocities[i] for i in order]
