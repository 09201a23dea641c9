"""The workload with a gradient inside: one WGAN-GP step (a critic update whose loss holds the
gradient penalty, lambda 10, then a generator update) on points of an 8-Gaussian ring, written
three ways with the same networks (MLPs 8-128-128-2 and 2-128-128-1) and the same work:

- PenaltyModel: a cf.Model, the penalty through cf.ops.grad (the keras-* engines);
- HandwrittenKerasTrainer: the same Keras layers with a train_step written by hand for the torch
  backend, torch.autograd.grad(create_graph=True) inside (keras-io's way of customizing fit());
- TorchTrainer: plain PyTorch modules, autograd and two optimizers (the torch engine).

Each has the Trainer's train_epoch(x, batch_size, shuffle_seed, on_batch), which bench times."""

import numpy as np

LATENT, WIDTH, PENALTY = 8, 128, 10.0
LR, BETAS = 1e-4, (0.5, 0.9)


def ring(n, seed=0):
    """n points near 8 centres on the unit circle (the usual WGAN-GP toy data)."""
    rng = np.random.default_rng(seed)
    angles = rng.integers(0, 8, size=n) * (np.pi / 4)
    centres = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return (centres + 0.05 * rng.normal(size=(n, 2))).astype(np.float32)


# ----------------------------------------------------------------------------- Keras, cf.Model


def _keras_networks():
    import keras

    generator = keras.Sequential(
        [
            keras.Input((LATENT,)),
            keras.layers.Dense(WIDTH, activation="relu"),
            keras.layers.Dense(WIDTH, activation="relu"),
            keras.layers.Dense(2),
        ],
        name="generator",
    )
    critic = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(WIDTH, activation="relu"),
            keras.layers.Dense(WIDTH, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="critic",
    )
    return generator, critic


def _keras_optimizer():
    import keras

    return keras.optimizers.Adam(LR, beta_1=BETAS[0], beta_2=BETAS[1])


def penalty_model_class():
    import keras
    from keras import ops as K

    import customfit as cf

    class PenaltyModel(cf.Model):
        def __init__(self):
            super().__init__()
            self.generator, self.critic = _keras_networks()
            self.seeds = keras.random.SeedGenerator(0)

        def updates(self):
            return [
                cf.Update("critic", self.critic_objective, self.critic),
                cf.Update("generator", self.generator_objective, self.generator),
            ]

        def critic_objective(self, x, training=True):
            n = K.shape(x)[0]
            fake = K.stop_gradient(
                self.generator(keras.random.normal((n, LATENT), seed=self.seeds))
            )
            mix_weight = keras.random.uniform((n, 1), seed=self.seeds)
            mixed = mix_weight * x + (1.0 - mix_weight) * fake
            slopes = cf.ops.grad(lambda points: K.sum(self.critic(points)))(mixed)
            norms = K.sqrt(K.sum(K.square(slopes), axis=1) + 1e-12)
            penalty = K.mean(K.square(norms - 1.0))
            return K.mean(self.critic(fake)) - K.mean(self.critic(x)) + PENALTY * penalty

        def generator_objective(self, x, training=True):
            z = keras.random.normal((K.shape(x)[0], LATENT), seed=self.seeds)
            return -K.mean(self.critic(self.generator(z)))

    return PenaltyModel


class _KerasTrainer:
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        from customfit.trainers.keras_trainer import Progress

        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        history = self.model.fit(
            x[order],
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[Progress(on_batch)],
        )
        return {k: float(v[-1]) for k, v in history.history.items()}


class CfTrainer(_KerasTrainer):
    def __init__(self, seed=0):
        import keras

        keras.utils.set_random_seed(seed)
        self.model = penalty_model_class()()
        self.model.compile(
            optimizer={"critic": _keras_optimizer(), "generator": _keras_optimizer()}
        )


# ----------------------------------------------------------------------------- Keras, by hand


class HandwrittenKerasTrainer(_KerasTrainer):
    """A keras.Model whose train_step is written for the torch backend, as keras-io writes one."""

    def __init__(self, seed=0):
        import keras
        import torch

        class HandwrittenModel(keras.Model):
            def __init__(self):
                super().__init__()
                self.generator, self.critic = _keras_networks()
                self.seeds = keras.random.SeedGenerator(0)
                self.critic_loss = keras.metrics.Mean(name="critic_loss")
                self.generator_loss = keras.metrics.Mean(name="generator_loss")

            @property
            def metrics(self):
                return [self.critic_loss, self.generator_loss]

            def call(self, points):
                return self.critic(points)

            def train_step(self, x):
                n = x.shape[0]
                fake = self.generator(keras.random.normal((n, LATENT), seed=self.seeds)).detach()
                mix_weight = keras.random.uniform((n, 1), seed=self.seeds)
                mixed = (mix_weight * x + (1.0 - mix_weight) * fake).detach().requires_grad_(True)
                (slopes,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
                penalty = ((slopes.square().sum(dim=1) + 1e-12).sqrt() - 1.0).square().mean()
                loss = self.critic(fake).mean() - self.critic(x).mean() + PENALTY * penalty
                weights = self.critic.trainable_weights
                grads = torch.autograd.grad(loss, [w.value for w in weights])
                with torch.no_grad():
                    self.critic_optimizer.apply(grads, weights)

                z = keras.random.normal((n, LATENT), seed=self.seeds)
                generator_loss = -self.critic(self.generator(z)).mean()
                weights = self.generator.trainable_weights
                grads = torch.autograd.grad(generator_loss, [w.value for w in weights])
                with torch.no_grad():
                    self.generator_optimizer.apply(grads, weights)
                self.critic_loss.update_state(loss.detach(), sample_weight=n)
                self.generator_loss.update_state(generator_loss.detach(), sample_weight=n)
                return {m.name: m.result() for m in self.metrics}

        if keras.backend.backend() != "torch":
            raise RuntimeError("the hand-written WGAN-GP step is written for the torch backend")
        keras.utils.set_random_seed(seed)
        model = HandwrittenModel()
        model.critic_optimizer, model.generator_optimizer = _keras_optimizer(), _keras_optimizer()
        model.compile(optimizer=model.critic_optimizer)
        model.critic_optimizer.build(model.critic.trainable_weights)
        model.generator_optimizer.build(model.generator.trainable_weights)
        self.model = model


# ----------------------------------------------------------------------------- PyTorch


class TorchTrainer:
    def __init__(self, seed=0):
        import torch
        from torch import nn

        from customfit import compute_device

        torch.manual_seed(seed)
        self.device = compute_device.torch_device()
        self.generator = nn.Sequential(
            nn.Linear(LATENT, WIDTH),
            nn.ReLU(),
            nn.Linear(WIDTH, WIDTH),
            nn.ReLU(),
            nn.Linear(WIDTH, 2),
        ).to(self.device)
        self.critic = nn.Sequential(
            nn.Linear(2, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 1)
        ).to(self.device)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), LR, betas=BETAS)
        self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), LR, betas=BETAS)
        self.model = self.critic  # what modes.applied compiles: the module with the penalty

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        import torch

        generator = torch.Generator().manual_seed(shuffle_seed)
        data = torch.from_numpy(x)[torch.randperm(len(x), generator=generator)].to(self.device)
        for start in range(0, len(data), batch_size):
            real = data[start : start + batch_size]
            n = len(real)
            fake = self.generator(torch.randn(n, LATENT, device=self.device)).detach()
            mix_weight = torch.rand(n, 1, device=self.device)
            mixed = (mix_weight * real + (1 - mix_weight) * fake).requires_grad_(True)
            (slopes,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
            penalty = ((slopes.square().sum(dim=1) + 1e-12).sqrt() - 1.0).square().mean()
            loss = self.critic(fake).mean() - self.critic(real).mean() + PENALTY * penalty
            self.critic_optimizer.zero_grad()
            loss.backward()
            self.critic_optimizer.step()

            generator_loss = -self.critic(
                self.generator(torch.randn(n, LATENT, device=self.device))
            ).mean()
            self.generator_optimizer.zero_grad()
            generator_loss.backward()
            self.generator_optimizer.step()
            on_batch({"critic_loss": loss.item(), "generator_loss": generator_loss.item()})
        return {"critic_loss": loss.item(), "generator_loss": generator_loss.item()}
