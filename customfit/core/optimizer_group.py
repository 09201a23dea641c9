"""OptimizerGroup: the several optimizers of a cf.Model compiled with a dict of them."""

from types import MappingProxyType

import keras


@keras.saving.register_keras_serializable(package="customfit")
class OptimizerGroup(keras.optimizers.Optimizer):
    """Several named optimizers behind the one `model.optimizer` Keras knows about.

    Keras's JAX trainer carries `model.optimizer.variables` as the optimizer state, so every
    member's variables must be reachable from here, in a fixed order, each exactly once: the
    members are kept sorted by name, in a mapping Keras does not track as an attribute. Like
    keras.optimizers.MultiOptimizer, the group lists its members as `optimizers` (which
    ReduceLROnPlateau and TensorBoard look for) and has no learning rate of its own; each member
    is named after its key, so that their learning rates are logged as learning_rate_<key>.
    """

    def __init__(self, optimizers, name="optimizer_group"):
        super().__init__(learning_rate=0.0, name=name)
        members = {}
        for key in sorted(optimizers):
            member = keras.optimizers.get(optimizers[key])
            if not member.built:
                member.name = key
            members[key] = member
        # Read-only, and not a dict: Keras's saving walk visits the members through
        # `optimizers` only.
        object.__setattr__(self, "_members", MappingProxyType(members))
        object.__setattr__(self, "_built_on", MappingProxyType({}))

    @property
    def members(self):
        return self._members

    @property
    def optimizers(self):
        return list(self._members.values())

    @property
    def variables(self):
        own = self._variables[:]
        return own + [v for member in self._members.values() for v in member.variables]

    def _no_learning_rate(self):
        return AttributeError(
            f"an OptimizerGroup has no learning rate of its own; its members "
            f"({', '.join(self._members)}) each have theirs: optimizer.members[name].learning_rate"
        )

    @property
    def learning_rate(self):
        raise self._no_learning_rate()

    @learning_rate.setter
    def learning_rate(self, value):
        raise self._no_learning_rate()

    def build(self, var_list, members_variables=None):
        """Mark the group built. Its members are built by cf.Model, each on the variables of its
        own sub-model: `members_variables` ({key: those variables, in the order the member was
        built on them}) is what finalize_variable_values hands each member."""
        if members_variables is not None:
            object.__setattr__(self, "_built_on", MappingProxyType(dict(members_variables)))
        self.built = True

    def finalize_variable_values(self, var_list):
        """At the end of fit() (Keras calls this with the model's trainable variables), each
        member finalizes its own variables: one with use_ema=True swaps its averages in, as
        Keras does with one optimizer."""
        for key, member in self._members.items():
            if key in self._built_on:
                member.finalize_variable_values(self._built_on[key])

    def apply(self, grads, trainable_variables=None):
        raise TypeError("an OptimizerGroup does not update variables itself; its members do")

    # The members save and load their own slots (Keras walks `optimizers`); the group keeps
    # only its own step count, so that nothing is stored twice.
    def save_own_variables(self, store):
        for i, variable in enumerate(self._variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        if len(store.keys()) != len(self._variables):
            raise ValueError(
                f"optimizer group {self.name!r}: expected {len(self._variables)} saved variables "
                f"of its own; got {len(store.keys())}"
            )
        for i, variable in enumerate(self._variables):
            variable.assign(store[str(i)])

    def get_config(self):
        return {
            "name": self.name,
            "optimizers": {k: keras.optimizers.serialize(v) for k, v in self._members.items()},
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        members = {
            k: keras.optimizers.deserialize(v, custom_objects=custom_objects)
            for k, v in config["optimizers"].items()
        }
        return cls(members, name=config.get("name", "optimizer_group"))
