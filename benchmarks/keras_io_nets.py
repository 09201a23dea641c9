"""The three keras-io models benchmarks/keras_io_steps.py times, as cf.Models, until the gallery's
own scripts are on main: the same networks and objectives as examples/keras_io/dcgan.py and
ddim.py on their branches (gallery-gen, gallery-codes), and keras-io's conv VAE (MNIST 28x28,
latent 2). Each namespace has what a gallery script has: the network factories, the cf.Model
class, make_model() and example_batch().

`load(name)` imports examples/keras_io/<name>.py where it exists, else returns the definition here,
so the benchmark switches to the gallery's own models by itself once they are merged."""

import importlib
import math
import sys
import types
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

import customfit as cf

GALLERY = Path(__file__).resolve().parent.parent / "examples" / "keras_io"


def load(name):
    """(the module or namespace, "gallery" or "benchmarks/keras_io_nets.py")."""
    if (GALLERY / f"{name}.py").is_file():
        sys.path.insert(0, str(GALLERY))
        return importlib.import_module(name), f"examples/keras_io/{name}.py"
    return LOCAL[name](), "benchmarks/keras_io_nets.py"


def has_after_step():
    """Whether cf.Model calls an `after_step` hook after each optimizer step (issue 34's core
    work); where it does not, the DDIM's EMA runs inside its objective (the same work, one step
    behind)."""
    return hasattr(cf.Model, "after_step")


# --- DCGAN (examples/keras_io/dcgan.py on gallery-gen) ---------------------------------------


def _dcgan():
    latent = 64

    def make_discriminator():
        return keras.Sequential(
            [
                keras.Input((14, 14, 1)),
                layers.Conv2D(32, 4, strides=2, padding="same"),
                layers.LeakyReLU(0.2),
                layers.Conv2D(64, 4, strides=2, padding="same"),
                layers.LeakyReLU(0.2),
                layers.Flatten(),
                layers.Dropout(0.2),
                layers.Dense(1, activation="sigmoid"),
            ],
            name="discriminator",
        )

    def make_generator():
        return keras.Sequential(
            [
                keras.Input((latent,)),
                layers.Dense(7 * 7 * 64),
                layers.Reshape((7, 7, 64)),
                layers.Conv2DTranspose(64, 4, strides=2, padding="same"),
                layers.LeakyReLU(0.2),
                layers.Conv2DTranspose(32, 4, strides=1, padding="same"),
                layers.LeakyReLU(0.2),
                layers.Conv2D(1, 5, padding="same", activation="sigmoid"),
            ],
            name="generator",
        )

    class GAN(cf.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.discriminator = make_discriminator()
            self.generator = make_generator()
            self.seed_generator = keras.random.SeedGenerator(1337)
            self.bce = keras.losses.BinaryCrossentropy()

        def generate(self, n, training=False):
            z = keras.random.normal((n, latent), seed=self.seed_generator)
            return self.generator(z, training=training)

        def discriminator_objective(self, real, training=True):
            n = ops.shape(real)[0]
            images = ops.concatenate([self.generate(n, training), real], axis=0)
            labels = ops.concatenate([ops.ones((n, 1)), ops.zeros((n, 1))], axis=0)
            # keras-io adds the noise: with a sigmoid output (from_logits=False) torch's
            # binary_cross_entropy refuses targets above 1, so here it is taken off the ones
            noise = keras.random.uniform(ops.shape(labels), seed=self.seed_generator)
            labels = ops.abs(labels - 0.05 * noise)
            return self.bce(labels, self.discriminator(images, training=training))

        def generator_objective(self, real, training=True):
            n = ops.shape(real)[0]
            judged = self.discriminator(self.generate(n, training), training=training)
            return self.bce(ops.zeros((n, 1)), judged)

        def updates(self):
            return [
                cf.Update("d", self.discriminator_objective, self.discriminator),
                cf.Update("g", self.generator_objective, self.generator),
            ]

    def make_model():
        model = GAN()
        model.compile(
            optimizer={"d": keras.optimizers.Adam(3e-4), "g": keras.optimizers.Adam(3e-4)}
        )
        return model

    def example_batch():
        return {"x": np.random.default_rng(0).uniform(size=(32, 14, 14, 1)).astype("float32")}

    return types.SimpleNamespace(
        LATENT=latent,
        make_discriminator=make_discriminator,
        make_generator=make_generator,
        GAN=GAN,
        make_model=make_model,
        example_batch=example_batch,
    )


# --- VAE (keras-io's examples/generative/vae.py) --------------------------------------------


def _vae():
    latent = 2

    class Sampling(layers.Layer):
        """z = mean + exp(log_var / 2) * epsilon, epsilon ~ N(0, 1) (keras-io's layer)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def make_encoder():
        inputs = keras.Input((28, 28, 1))
        x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(inputs)
        x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
        x = layers.Flatten()(x)
        x = layers.Dense(16, activation="relu")(x)
        z_mean = layers.Dense(latent, name="z_mean")(x)
        z_log_var = layers.Dense(latent, name="z_log_var")(x)
        z = Sampling()([z_mean, z_log_var])
        return keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")

    def make_decoder():
        inputs = keras.Input((latent,))
        x = layers.Dense(7 * 7 * 64, activation="relu")(inputs)
        x = layers.Reshape((7, 7, 64))(x)
        x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
        x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
        outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
        return keras.Model(inputs, outputs, name="decoder")

    def losses(data, z_mean, z_log_var, reconstruction):
        """keras-io's: summed binary cross-entropy per image, and the KL term per image."""
        reconstruction_loss = ops.mean(
            ops.sum(keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2))
        )
        kl = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
        kl_loss = ops.mean(ops.sum(kl, axis=1))
        return reconstruction_loss + kl_loss, reconstruction_loss, kl_loss

    class VAE(cf.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.encoder = make_encoder()
            self.decoder = make_decoder()

        def objective(self, data, training=True):
            z_mean, z_log_var, z = self.encoder(data, training=training)
            total, reconstruction, kl = losses(data, z_mean, z_log_var, self.decoder(z))
            return {"loss": total, "reconstruction_loss": reconstruction, "kl_loss": kl}

    def make_model():
        model = VAE()
        model.compile(optimizer=keras.optimizers.Adam())
        return model

    def example_batch():
        return {"x": np.random.default_rng(0).uniform(size=(128, 28, 28, 1)).astype("float32")}

    return types.SimpleNamespace(
        LATENT=latent,
        make_encoder=make_encoder,
        make_decoder=make_decoder,
        losses=losses,
        VAE=VAE,
        make_model=make_model,
        example_batch=example_batch,
    )


# --- DDIM (examples/keras_io/ddim.py on gallery-codes) --------------------------------------


DDIM_DIMS, DDIM_MAX_FREQUENCY = 16, 1000.0


@keras.saving.register_keras_serializable(package="keras_io_nets")
def sinusoidal_embedding(variance):
    """Registered: keras.models.clone_model (the EMA network) rebuilds the Lambda layer from its
    config, and finds the function by its registered name."""
    frequencies = ops.exp(ops.linspace(0.0, math.log(DDIM_MAX_FREQUENCY), DDIM_DIMS // 2))
    angles = 2.0 * math.pi * frequencies * variance
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)


def _ddim():
    min_signal, max_signal = 0.02, 0.95
    size = 14

    def residual_block(x, width):
        residual = x if x.shape[-1] == width else layers.Conv2D(width, 1)(x)
        x = layers.BatchNormalization(center=False, scale=False)(x)
        x = layers.Conv2D(width, 3, padding="same", activation="swish")(x)
        x = layers.Conv2D(width, 3, padding="same")(x)
        return layers.Add()([x, residual])

    def get_network(widths=(32, 64), block_depth=2):
        noisy_images = keras.Input((size, size, 1))
        noise_variances = keras.Input((1, 1, 1))
        e = layers.Lambda(sinusoidal_embedding)(noise_variances)
        e = layers.UpSampling2D(size)(e)
        x = layers.Concatenate()([layers.Conv2D(widths[0], 1)(noisy_images), e])
        skips = []
        for _ in range(block_depth):
            x = residual_block(x, widths[0])
            skips.append(x)
        x = layers.AveragePooling2D(2)(x)
        for _ in range(block_depth):
            x = residual_block(x, widths[1])
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        for _ in range(block_depth):
            x = residual_block(layers.Concatenate()([x, skips.pop()]), widths[0])
        x = layers.Conv2D(1, 1, kernel_initializer="zeros")(x)
        return keras.Model([noisy_images, noise_variances], x)

    def diffusion_schedule(diffusion_times):
        start, end = math.acos(max_signal), math.acos(min_signal)
        angles = start + diffusion_times * (end - start)
        return ops.sin(angles), ops.cos(angles)  # noise rates, signal rates

    class DiffusionModel(cf.Model):
        def __init__(self, mean=0.13, std=0.28, ema=0.995, **kwargs):
            super().__init__(**kwargs)
            self.mean, self.std, self.ema = mean, std, ema
            self.network = get_network()
            self.ema_network = keras.models.clone_model(self.network)
            self.ema_network.set_weights(self.network.get_weights())
            self.ema_network.trainable = False
            self.seeds = keras.random.SeedGenerator(0)

        def diffusion_schedule(self, diffusion_times):
            return diffusion_schedule(diffusion_times)

        def denoise(self, noisy_images, noise_rates, signal_rates, training):
            network = self.network if training else self.ema_network
            pred_noises = network([noisy_images, noise_rates**2], training=training)
            return pred_noises, (noisy_images - noise_rates * pred_noises) / signal_rates

        def objective(self, images, training=True):
            if training and not has_after_step():
                self.after_step()  # the EMA of the weights before this step: the same work
            images = (images - self.mean) / self.std
            noises = keras.random.normal(ops.shape(images), seed=self.seeds)
            times = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.seeds)
            noise_rates, signal_rates = self.diffusion_schedule(times)
            noisy_images = signal_rates * images + noise_rates * noises
            pred_noises, pred_images = self.denoise(
                noisy_images, noise_rates, signal_rates, training
            )
            noise_loss = ops.mean(ops.abs(noises - pred_noises))
            return {"loss": noise_loss, "image_loss": ops.mean(ops.abs(images - pred_images))}

        def after_step(self):
            for weight, ema_weight in zip(self.network.weights, self.ema_network.weights):
                ema_weight.assign(self.ema * ema_weight + (1 - self.ema) * weight)

    def make_model(mean=0.13, std=0.28):
        model = DiffusionModel(mean, std)
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4))
        return model

    def example_batch():
        x = np.random.default_rng(0).uniform(size=(32, size, size, 1)).astype("float32")
        return {"x": x}

    return types.SimpleNamespace(
        SIZE=size,
        get_network=get_network,
        DiffusionModel=DiffusionModel,
        make_model=make_model,
        example_batch=example_batch,
    )


LOCAL = {"dcgan": _dcgan, "vae": _vae, "ddim": _ddim}
