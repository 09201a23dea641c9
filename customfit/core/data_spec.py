"""A batch's structure as data: what a saved cf.Model records to rebuild its step, and the
first batch of a fit() from which the step is built."""

import keras


def spec_to_config(spec):
    """A batch's structure of KerasTensors as JSON-able data (tuples stay tuples)."""
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)):
        return {type(spec).__name__: [spec_to_config(s) for s in spec]}
    if isinstance(spec, dict):
        return {"dict": {k: spec_to_config(v) for k, v in spec.items()}}
    return {"shape": list(spec.shape), "dtype": spec.dtype}


def spec_from_config(config):
    if config is None:
        return None
    if "tuple" in config:
        return tuple(spec_from_config(c) for c in config["tuple"])
    if "list" in config:
        return [spec_from_config(c) for c in config["list"]]
    if "dict" in config:
        return {k: spec_from_config(v) for k, v in config["dict"].items()}
    return keras.KerasTensor(tuple(config["shape"]), config["dtype"])


def first_batch(iterator):
    for _, _, data_or_iterator in iterator:
        if isinstance(data_or_iterator, (list, tuple)):
            return data_or_iterator[0]
        return next(data_or_iterator)


def keep_spec(model, spec):
    """Remember the structure of the batch `model`'s step was built from (for its build config)."""
    object.__setattr__(model, "_cf_data_spec", spec)


def kept_spec(model):
    """The batch structure keep_spec remembered, or None."""
    return getattr(model, "_cf_data_spec", None)
