"""toy: the lecture's 5-cluster classifier (Dense 10-8-5)."""

from customfit.tasks.classifier.architectures import TOY_MLP

NAME = "toy"
FAMILY = "classifier"
SUMMARY = "5 Gaussian clusters in 2-D, Dense 10-8-5 (the lecture's first example)"
JUDGE = "held-out accuracy on 600 fresh points from the same clusters"
MODELS = {"lecture": TOY_MLP}
DEFAULTS = {"epochs": 5, "batch_size": 10, "lr": 1e-3, "seed": 0, "model": "lecture"}
BARS = {"accuracy": 0.99}


def load():
    from customfit.data import toy_split

    return toy_split()
