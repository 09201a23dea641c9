"""The GAN's two networks as Keras models, the lecture's and ours (DCGAN-like), written once
with keras.layers and keras.ops: the native tensorflow engine (with_tensorflow.py, where tf.keras
is this Keras) trains them with tf.GradientTape, the Keras engines with fit(). Their sizes and
batch-norm settings are layout.py's.
"""

import keras
from keras import layers, ops

from customfit.tasks.gan import layout


def batch_norm(settings):
    return layers.BatchNormalization(
        momentum=settings["bn_momentum"], epsilon=settings["bn_epsilon"]
    )


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return ops.cast(h, "float32")


# --8<-- [start:model]
class LectureGenerator(keras.Model):
    """The lecture's generator: dense 256 -> 4x4x16, batch norm, transposed convolutions
    2x2 (8), 2x2 (4), 3x3 (1, sigmoid), each hidden one followed by ReLU then batch norm."""

    def __init__(self, latent, **kwargs):
        super().__init__(**kwargs)
        s = layout.LECTURE
        self.dense = layers.Dense(4 * 4 * 16, activation="relu")
        self.reshape = layers.Reshape((4, 4, 16))
        self.norm0 = batch_norm(s)
        self.up1 = layers.Conv2DTranspose(8, 2, activation="relu")
        self.norm1 = batch_norm(s)
        self.up2 = layers.Conv2DTranspose(4, 2, activation="relu")
        self.norm2 = batch_norm(s)
        self.out = layers.Conv2DTranspose(1, 3, activation="sigmoid")
        self(keras.Input((latent,)))  # create the weights now, as the lecture does

    def call(self, z, training=False):
        h = self.norm0(self.reshape(self.dense(z)), training=training)
        h = self.norm1(self.up1(h), training=training)
        h = self.norm2(self.up2(h), training=training)
        return float32(self.out(h))


class LectureDiscriminator(keras.Model):
    """The lecture's discriminator: 3x3 convolutions 4, 8, 16 (ReLU), a dense logit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = layers.Conv2D(4, 3, activation="relu")
        self.conv2 = layers.Conv2D(8, 3, activation="relu")
        self.conv3 = layers.Conv2D(16, 3, activation="relu")
        self.flatten = layers.Flatten()
        self.logit = layers.Dense(1)
        self(keras.Input(layout.IMAGE_SHAPE))

    def call(self, x, training=False):
        return float32(self.logit(self.flatten(self.conv3(self.conv2(self.conv1(x))))))


class Generator(keras.Model):
    """DCGAN-like: dense -> 4x4xW, batch norm, ReLU; a 4x4 stride-2 transposed convolution to
    8x8xW/2, batch norm, ReLU; a 3x3 transposed convolution to 8x8x1, sigmoid."""

    def __init__(self, latent, **kwargs):
        super().__init__(**kwargs)
        s = layout.DEFAULT
        w = s["width"]
        self.dense = layers.Dense(4 * 4 * w)
        self.reshape = layers.Reshape((4, 4, w))
        self.norm0 = batch_norm(s)
        self.up = layers.Conv2DTranspose(w // 2, 4, strides=2, padding="same", use_bias=False)
        self.norm1 = batch_norm(s)
        self.out = layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid")
        self(keras.Input((latent,)))

    def call(self, z, training=False):
        h = ops.relu(self.norm0(self.reshape(self.dense(z)), training=training))
        h = ops.relu(self.norm1(self.up(h), training=training))
        return float32(self.out(h))


class Discriminator(keras.Model):
    """DCGAN-like: a 3x3 convolution (W/2), leaky ReLU; a 4x4 stride-2 convolution to 4x4xW,
    batch norm, leaky ReLU; a dense logit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        s = layout.DEFAULT
        w, self.slope = s["width"], s["leaky_slope"]
        self.conv1 = layers.Conv2D(w // 2, 3, padding="same")
        self.conv2 = layers.Conv2D(w, 4, strides=2, padding="same", use_bias=False)
        self.norm = batch_norm(s)
        self.flatten = layers.Flatten()
        self.logit = layers.Dense(1)
        self(keras.Input(layout.IMAGE_SHAPE))

    def call(self, x, training=False):
        h = ops.leaky_relu(self.conv1(x), self.slope)
        h = ops.leaky_relu(self.norm(self.conv2(h), training=training), self.slope)
        return float32(self.logit(self.flatten(h)))


# --8<-- [end:model]

NETWORKS = {
    "lecture": (LectureGenerator, LectureDiscriminator),
    "default": (Generator, Discriminator),
}
