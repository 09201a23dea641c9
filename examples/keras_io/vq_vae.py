"""
Title: Vector-quantized variational autoencoder (VQ-VAE)
keras-io: examples/generative/vq_vae.py (https://keras.io/examples/generative/vq_vae/)
Description: A convolutional encoder maps each digit to a 7x7 grid of 16-dimensional vectors,
    each replaced by its nearest entry of a learned 128-entry codebook; a decoder draws the
    digit back from the codes.
Shows: a layer that adds its own losses (`add_loss`: codebook and commitment terms) and an
    objective that reads them back, `reconstruction + sum(self.vqvae.losses)`, as keras-io writes
    it; a straight-through estimator with `ops.stop_gradient`.
Result: held-out reconstruction MSE (pixels in [0, 1]) <= 0.02 (jax: 0.0156 after 300 steps;
    an untrained decoder scores about 0.2), with the codebook's perplexity on held-out digits
    >= 3 (jax: 4.8 of 128 entries: most entries go unused in so short a run); keras-io shows
    reconstructions and reports no figure.
Run: KERAS_BACKEND=jax python examples/keras_io/vq_vae.py   (tensorflow and torch too;
    CUSTOMFIT_QUICK=1 for a brief run)
"""

"""
## Setup
"""

import keras
import numpy as np
from keras import layers, ops

import customfit as cf
import gallery

"""
## The vector quantizer

The encoder's output vectors are compared with every codebook entry (squared distances, expanded
as |x|^2 + |e|^2 - 2 x.e) and each is replaced by its nearest. Two losses pull them together,
each with a stop-gradient on one side: the codebook term moves the entries towards the encoder's
outputs; the commitment term (weight beta = 0.25) keeps the encoder near its entries. The layer
adds both with `add_loss`. Quantizing has no gradient, so the decoder's gradient is copied onto
the encoder's output unchanged: `x + stop_gradient(quantized - x)` equals `quantized` forwards
and `x` backwards.
"""


class VectorQuantizer(layers.Layer):
    def __init__(self, num_embeddings, embedding_dim, beta=0.25, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim, self.num_embeddings, self.beta = embedding_dim, num_embeddings, beta
        self.embeddings = self.add_weight(
            shape=(embedding_dim, num_embeddings), initializer="random_uniform", name="codebook"
        )

    def code_indices(self, flat):
        distances = (
            ops.sum(flat**2, axis=1, keepdims=True)
            + ops.sum(self.embeddings**2, axis=0)
            - 2 * ops.matmul(flat, self.embeddings)
        )
        return ops.argmin(distances, axis=1)

    def call(self, x):
        flat = ops.reshape(x, (-1, self.embedding_dim))
        codes = ops.one_hot(self.code_indices(flat), self.num_embeddings)
        quantized = ops.reshape(ops.matmul(codes, ops.transpose(self.embeddings)), ops.shape(x))
        commitment = self.beta * ops.mean((ops.stop_gradient(quantized) - x) ** 2)
        codebook = ops.mean((quantized - ops.stop_gradient(x)) ** 2)
        self.add_loss(commitment + codebook)
        return x + ops.stop_gradient(quantized - x)


"""
## Encoder, decoder and the trainer

keras-io's networks: two stride-2 ReLU convolutions (32, 64 filters) and a 1x1 convolution to
the latent width. Its decoder mirrors them with stride-2 transposed convolutions; ours doubles
the size by nearest-neighbour upsampling and then convolves (same widths and shapes), the
common remedy for the checkerboard patterns transposed convolutions can leave. The trainer's
objective is the reconstruction error scaled by the training pixels' variance plus the
quantizer's losses.
"""


def get_vqvae(latent_dim=16, num_embeddings=128):
    encoder = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(latent_dim, 1, padding="same"),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((7, 7, latent_dim)),
            layers.UpSampling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.UpSampling2D(2),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(1, 3, padding="same"),
        ],
        name="decoder",
    )
    quantizer = VectorQuantizer(num_embeddings, latent_dim, name="vector_quantizer")
    return keras.Sequential([keras.Input((28, 28, 1)), encoder, quantizer, decoder], name="vq_vae")


class VQVAETrainer(cf.Model):
    def __init__(self, train_variance, latent_dim=16, num_embeddings=128, **kwargs):
        super().__init__(**kwargs)
        self.train_variance = train_variance
        self.vqvae = get_vqvae(latent_dim, num_embeddings)

    def call(self, x):
        return self.vqvae(x)

    def objective(self, x, training=True):
        reconstructions = self.vqvae(x, training=training)
        reconstruction_loss = ops.mean((x - reconstructions) ** 2) / self.train_variance
        vq_loss = sum(self.vqvae.losses)
        return {
            "loss": reconstruction_loss + vq_loss,
            "reconstruction_loss": reconstruction_loss,
            "vq_loss": vq_loss,
        }


def make_model(train_variance=0.095):
    model = VQVAETrainer(train_variance, latent_dim=16, num_embeddings=128)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def example_batch():
    x = np.random.default_rng(0).uniform(size=(32, 28, 28, 1)).astype("float32") - 0.5
    return {"x": x}


"""
## Training

keras-io trains 30 epochs over MNIST's 60000 digits (pixels shifted to [-0.5, 0.5]) with Adam;
ours trains fewer epochs over a share of them.
"""

if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    (x_train, _), (x_test, _) = gallery.mnist()
    n, epochs = (1024, 2) if gallery.QUICK else (12800, 3)  # whole batches of 64 when brief
    x_train, x_test = x_train[:n] - 0.5, x_test[: 300 if gallery.QUICK else 2000] - 0.5
    model = make_model(train_variance=float(np.var(x_train)))
    timer = gallery.EpochTimer()
    model.fit(
        x_train,
        epochs=epochs,
        batch_size=64 if gallery.QUICK else 128,
        callbacks=[timer],
        verbose=0 if gallery.QUICK else 2,
    )

    """
    ## The result

    The mean squared error of held-out reconstructions, and the perplexity of the codes they
    use: exp of the entropy of how often each codebook entry is chosen (1 if a single entry
    serves every position, 128 if all are used equally).
    """

    reconstructions = ops.convert_to_numpy(model.predict(x_test, batch_size=500, verbose=0))
    mse = float(np.mean((reconstructions - x_test) ** 2))
    encoder, quantizer = model.vqvae.get_layer("encoder"), model.vqvae.get_layer("vector_quantizer")
    encoded = ops.reshape(encoder(x_test), (-1, 16))
    codes = ops.convert_to_numpy(quantizer.code_indices(encoded))
    usage = np.bincount(codes, minlength=128) / len(codes)
    perplexity = float(np.exp(-np.sum(usage[usage > 0] * np.log(usage[usage > 0]))))
    print(f"held-out reconstruction MSE {mse:.4f}; codebook perplexity {perplexity:.1f} of 128")
    bar, perplexity_bar = (0.08, 2.0) if gallery.QUICK else (0.02, 3.0)  # untrained: about 0.2
    gallery.report(
        "vq_vae",
        "held-out reconstruction MSE",
        mse,
        f"<= {bar}",
        timer.seconds_per_epoch(),
        keras_io=None,
        perplexity=perplexity,
        perplexity_bar=f">= {perplexity_bar}",
        objective_lines=9,
        train_step_lines=26,
    )
    if not gallery.QUICK:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 10, figsize=(10, 2.2))
        for i in range(10):
            for row, images in enumerate([x_test, reconstructions]):
                axes[row, i].imshow(images[i, ..., 0] + 0.5, cmap="gray", vmin=0, vmax=1)
                axes[row, i].axis("off")
        axes[0, 0].set_title("original", fontsize=8, loc="left")
        axes[1, 0].set_title("reconstructed", fontsize=8, loc="left")
        fig.savefig(gallery.picture_path("vq_vae"), dpi=80, bbox_inches="tight")
    assert mse <= bar and perplexity >= perplexity_bar, (
        f"MSE {mse:.4f} (bar {bar}), perplexity {perplexity:.1f} (bar {perplexity_bar})"
    )
