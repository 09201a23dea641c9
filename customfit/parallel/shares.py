"""What every way of spreading a run shares, in plain Python (no framework): the CPU cores a
process may run on, an epoch's samples as N devices take them, and the flag a launched worker
finds. The floor under parallel/'s framework modules and customfit/devices.py alike."""

import os

# Set in the workers that customfit.parallel.process_group.launch starts: the process that
# launched them holds their run folder; in a run torchrun started, global rank 0 holds it.
LAUNCHED_HERE = "CUSTOMFIT_LAUNCHED_HERE"


def cores():
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def epoch_order(order, devices):
    """An epoch's shuffled sample indices as N devices take them: the first multiple of N."""
    return order[: len(order) - len(order) % devices]
