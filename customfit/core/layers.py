"""Walking a Keras layer's sublayers."""


def all_layers(layer, include_self=True):
    """Every layer inside `layer` (itself first where include_self), at any depth, each once.

    Keras's own walk, Layer._flatten_layers: its public `Model.layers` lists a model's direct
    layers only, and a plain keras.Layer has no public list of the layers it holds, so a walk
    over `.layers` would miss a layer inside a custom Layer. The one use of it in customfit.
    """
    return layer._flatten_layers(include_self=include_self)
