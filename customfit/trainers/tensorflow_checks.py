"""What a native engine checks about its process before it builds anything."""


def require_tensorflow_backend():
    """The native tensorflow engine builds tf.keras layers; TF 2.21's tf.keras *is* Keras 3 and
    follows KERAS_BACKEND: under another backend its layers would hold JAX or torch tensors that
    GradientTape cannot see."""
    import tensorflow as tf

    backend = tf.keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "the tensorflow engine needs KERAS_BACKEND=tensorflow (tf.keras follows it), "
            f"but this process's Keras backend is {backend!r}; run it in its own process"
        )
