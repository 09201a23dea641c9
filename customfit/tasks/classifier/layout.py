"""What must agree across the classifier's engines: the shapes of its weights in the canonical
layout (Keras's; customfit/trainers/canonical.py converts to and from each framework's)."""

from customfit.tasks.classifier.architectures import output_shape


def canonical_shapes(layers, input_shape, num_classes=None):
    """The canonical shapes of an architecture's weights (see architectures.py), in layer order.
    With num_classes, also check that the last layer gives that many logits."""
    if num_classes is not None and (layers[-1][0] != "dense" or layers[-1][1] != num_classes):
        raise ValueError(
            f"the last layer must be a dense layer of {num_classes} logits, given {layers[-1]!r}"
        )

    shapes = []
    previous = tuple(input_shape)
    for layer, shape in zip(layers, output_shape(layers, input_shape)):
        if layer[0] == "dense":
            shapes += [(previous[-1], layer[1]), (layer[1],)]
        elif layer[0] == "conv":
            shapes += [(layer[2], layer[2], previous[-1], layer[1]), (layer[1],)]
        previous = shape
    return shapes
