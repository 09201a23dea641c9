"""Why keras-tensorflow does not train across hosts: a stock keras.Sequential, built and
compiled in a MultiWorkerMirroredStrategy's scope, then fit() on arrays, as Keras's guides
write it for MirroredStrategy. tests/test_hosts.py starts two of these as two workers
(TF_CONFIG set) and reads what fit() raised.

    KERAS_BACKEND=tensorflow TF_CONFIG=... python tests/workers/keras_mwms_worker.py OUT.json
"""

import json
import sys


def main(output):
    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
    try:
        model.fit(
            np.ones((64, 3), "float32"),
            np.ones((64, 1), "float32"),
            batch_size=16,
            epochs=1,
            verbose=0,
        )
        raised = None
    except Exception as e:  # what Keras raises is the finding
        text = " ".join(str(e).split())  # the middle is the PerReplica's arrays
        raised = f"{type(e).__name__}: {text[:60]} ... {text[-200:]}"
    with open(output, "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync, "raised": raised}, f)


if __name__ == "__main__":
    main(sys.argv[1])
