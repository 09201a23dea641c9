"""digits: scikit-learn's 8x8 digits, a CNN (exercises 1, 3, 4, 6 and 8)."""

import functools

from customfit.tasks.classifier import task as classifier
from customfit.tasks.classifier.architectures import DIGITS_DEFAULT, DIGITS_LECTURE

NAME = "digits"
FAMILY = "classifier"
SUMMARY = "scikit-learn's 8x8 digits, 80/20 split; --model lecture is conv 4-8-8"
JUDGE = "held-out accuracy on the 360 test digits"
MODELS = {"default": DIGITS_DEFAULT, "lecture": DIGITS_LECTURE}
# Batch 64 for 30 epochs (as many steps as batch 32 for 15): a held-out accuracy
# that no longer swings by a percent from one epoch to the next.
DEFAULTS = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "seed": 0, "model": "default"}
# The lecture model's own settings (10 epochs of batch 10) when --model lecture is asked for.
MODEL_DEFAULTS = {"lecture": {"epochs": 10, "batch_size": 10}}
BARS_BY_MODEL = {"default": {"accuracy": 0.985}, "lecture": {"accuracy": 0.88}}
HEADLINE, OPTIONS = classifier.HEADLINE, classifier.OPTIONS
build_trainer = functools.partial(classifier.build_trainer, models=MODELS)
produce, judge, write = classifier.produce, classifier.judge, classifier.write
parity_inputs = classifier.parity_inputs


def bars(settings):
    return dict(BARS_BY_MODEL[settings["model"]])


def load():
    from customfit.data import digits_split

    return digits_split()
