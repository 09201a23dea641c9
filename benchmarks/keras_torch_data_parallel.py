"""keras-torch on several processes: cf.Model's fit() with the gradients all-reduced in its torch
step (what `customfit run ... --engine keras-torch --devices N` does), against keras-io's
"Multi-GPU distributed training with PyTorch" way, a Keras model wrapped in
torch.nn.parallel.DistributedDataParallel and trained by a hand-written torch loop.

    .venv/bin/python benchmarks/keras_torch_data_parallel.py

Both train the digits default CNN on 2 gloo processes (one thread each), global batch 64 (32 per
process, DistributedSampler shares), Adam at 1e-3, from the same weights; the two are run
alternately (A B A B ...) in the same processes, RUNS times, EPOCHS epochs each; a run's figure
is its median epoch after the first. One process of one thread fitting the whole batch
(cf.Model) is the baseline. Results: benchmarks/results/keras_torch_data_parallel.json and .md.

Why cf.Model does not take the DDP wrapper: DDP averages gradients from hooks that run when
backward() accumulates into .grad, and cf.Model's step asks torch.autograd.grad for each
update's gradients (several optimizers, frozen sub-models, gradients of gradients), which never
fire them; fit() also calls the Keras model, not a wrapper. So the step all-reduces the
gradients itself, in one flat buffer, as DDP's bucket does.
"""

import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RUNS, EPOCHS, BATCH, PROCESSES = 3, 4, 64, 2


def _epoch_seconds(train_epoch):
    seconds = []
    for epoch in range(EPOCHS):
        start = time.perf_counter()
        train_epoch(epoch)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])


def cf_model_fit(split, devices):
    """The keras-torch engine's Trainer: cf.Model.fit() on this process's shares."""
    from customfit.tasks.classifier.architectures import DIGITS_DEFAULT
    from customfit.tasks.classifier.with_keras import Trainer

    trainer = Trainer(DIGITS_DEFAULT, split.input_shape, 10, 1e-3, 0, devices=devices)
    return lambda epoch: trainer.train_epoch(
        split.x_train, split.y_train, BATCH, epoch, lambda logs: None
    )


def ddp_wrapped(split):
    """keras-io's way: the Keras network in DDP, a torch loop, torch's Adam."""
    import keras
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from customfit.tasks.classifier.architectures import DIGITS_DEFAULT
    from customfit.tasks.classifier.with_keras import build_network

    keras.utils.set_random_seed(0)
    network = build_network(DIGITS_DEFAULT, split.input_shape)
    model = torch.nn.parallel.DistributedDataParallel(network)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    dataset = TensorDataset(torch.from_numpy(split.x_train), torch.from_numpy(split.y_train))
    sampler = DistributedSampler(dataset, shuffle=True, seed=0, drop_last=True)
    loader = DataLoader(dataset, batch_size=BATCH // PROCESSES, sampler=sampler)

    def train_epoch(epoch):
        sampler.set_epoch(epoch)
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()

    return train_epoch


def measure_in_group():
    from customfit.data import digits_split
    from customfit.parallel import process_group

    process_group.join()
    split = digits_split()
    ways = {
        "cf.Model fit(), all-reduce in its step": cf_model_fit(split, PROCESSES),
        "Keras model in DDP, torch loop (keras-io)": ddp_wrapped(split),
    }
    seconds = {name: [] for name in ways}
    for _ in range(RUNS):
        for name, train_epoch in ways.items():
            seconds[name].append(_epoch_seconds(train_epoch))
    process_group.leave()
    return seconds


def main():
    os.environ["KERAS_BACKEND"] = "torch"
    from customfit.data import digits_split
    from customfit.parallel import process_group

    seconds = process_group.launch(measure_in_group, (), PROCESSES)[0]
    import torch

    torch.set_num_threads(1)
    one = cf_model_fit(digits_split(), 1)
    seconds["cf.Model fit(), one process"] = [_epoch_seconds(one) for _ in range(RUNS)]
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, no GPU"
    record = {
        "date": date.today().isoformat(),
        "machine": machine,
        "runs": RUNS,
        "epochs": EPOCHS,
        "global_batch": BATCH,
        "processes": PROCESSES,
        "seconds_per_epoch": seconds,
        "median_seconds_per_epoch": medians,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "keras_torch_data_parallel.json").write_text(json.dumps(record, indent=2))
    base = medians["cf.Model fit(), one process"]
    lines = [
        f"Measured {record['date']} on {machine}: digits default CNN, global batch {BATCH}, "
        f"{PROCESSES} gloo processes of one thread each (the baseline: one process, one thread), "
        f"median of {RUNS} runs (epochs 2-{EPOCHS} of each).",
        "",
        "| way | s/epoch | one process / this |",
        "|---|---:|---:|",
    ]
    for name, median in medians.items():
        lines.append(f"| {name} | {median:.2f} | {base / median:.2f} |")
    (HERE / "results" / "keras_torch_data_parallel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
