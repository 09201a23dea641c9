"""customfit's targeted PGD beside the Adversarial Robustness Toolbox's (ART), on the same model.

    .venv/bin/pip install -c constraints.txt -e ".[bench]"     # ART: a benchmark-only dependency
    .venv/bin/python benchmarks/adversarial_peer.py             # ~13 CPU-minutes at 40 steps
    .venv/bin/python benchmarks/adversarial_peer.py --quick     # a smoke run: 360 pairs, 1 repeat, writes nothing

The digits default CNN is trained on the torch engine (30 epochs of batch 64, lr 1e-3, seed 0).
Every held-out digit is then pushed toward each of its 9 wrong labels (3240 pairs), for each eps,
by (a) customfit's `Trainer.attack(method="pgd")` and (b) ART's ProjectedGradientDescent on the
same nn.Module (PyTorchClassifier, so ART runs its PyTorch implementation), with the same step
size (rules.pgd_step_size), number of steps, batch size, start (dx = 0: num_random_init=0) and
loss (a cross-entropy summed over the batch, as customfit's; only its sign is used). ART passes x
to the module unchanged, so the module gets the same NHWC float32 arrays in both (channels_first
is only a label there). Success: the model's argmax on x_adv is the target. Time: the attack call
alone, median of 3 runs, the two alternating in one process, torch on 2 threads (--threads).
ART's loss_gradient calls loss.backward(), which also computes every weight's gradient;
customfit asks autograd for the input's gradient alone. The two algorithms are the same, so their adversarials agree to float rounding, except where a
gradient component is ~0 and rounding flips its sign: then that pixel walks elsewhere (2026-11-29,
eps 0.1: 4 pixels of 1 pair in 3240, by 0.0625; the model's answers stayed the same on all pairs).
Results: benchmarks/results/adversarial_peer.json and .md.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EPSILONS = (0.05, 0.1, 0.15, 0.2, 0.3)
EPOCHS, TRAIN_BATCH, LR, SEED = 30, 64, 1e-3, 0
REPEATS = 3
QUICK_DIGITS = 40  # --quick: the first 40 held-out digits (360 pairs)
TOLERANCE = 1e-6  # float32 rounding of x + dx


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def train(epochs=EPOCHS, seed=SEED):
    """The digits default CNN on the torch engine, trained as `customfit run digits --engine torch`
    trains it; returns the adversarial task's Trainer (the classifier plus attack())."""
    from customfit.data import digits_split, epoch_seed
    from customfit.tasks.adversarial.with_torch import Trainer
    from customfit.tasks.classifier.architectures import DIGITS_DEFAULT

    data = digits_split()
    trainer = Trainer(DIGITS_DEFAULT, data.input_shape, data.num_classes, LR, seed)
    for epoch in range(epochs):
        trainer.train_epoch(
            data.x_train, data.y_train, TRAIN_BATCH, epoch_seed(seed, epoch), lambda means: None
        )
    return trainer, data


def pairs(data, digits=None):
    """Every held-out digit (the first `digits` of them, if given) toward each of its 9 wrong
    labels, in order: x (N, 8, 8, 1) float32, target (N,) int64, label (N,) int64."""
    x, y = data.x_test[:digits], data.y_test[:digits]
    index = [(i, t) for i in range(len(y)) for t in range(data.num_classes) if t != y[i]]
    i, t = np.array(index).T
    return x[i], t.astype(np.int64), y[i]


def customfit_attack(trainer, x, target, eps, steps, batch_size):
    return trainer.attack(x, target, method="pgd", eps=eps, steps=steps, batch_size=batch_size)


def art_classifier(trainer, num_classes=10):
    from art.estimators.classification import PyTorchClassifier
    from torch import nn

    return PyTorchClassifier(
        model=trainer.model,
        loss=nn.CrossEntropyLoss(reduction="sum"),
        input_shape=(8, 8, 1),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        channels_first=False,
        device_type="cpu",
    )


def art_attack(classifier, x, target, eps, steps, batch_size):
    from art.attacks.evasion import ProjectedGradientDescent

    from customfit.tasks.adversarial import rules

    attack = ProjectedGradientDescent(
        classifier,
        norm=np.inf,
        eps=eps,
        eps_step=rules.pgd_step_size(eps, steps),
        max_iter=steps,
        targeted=True,
        num_random_init=0,
        batch_size=batch_size,
        verbose=False,
    )
    return attack.generate(x=x, y=target)


def score(trainer, x, x_adv, target, eps):
    linf = np.abs(x_adv - x).reshape(len(x), -1).max(axis=1)
    predicted = trainer.predict_proba(x_adv).argmax(axis=1)
    return {
        "success": float(np.mean(predicted == target)),
        "mean_linf": float(linf.mean()),
        "max_linf": float(linf.max()),
        "min_pixel": float(x_adv.min()),
        "max_pixel": float(x_adv.max()),
        "inside": bool(linf.max() <= eps + TOLERANCE and x_adv.min() >= 0.0 and x_adv.max() <= 1.0),
        "dtype": str(x_adv.dtype),
    }, predicted


def compare(trainer, x, target, eps, steps, batch_size, repeats=REPEATS, classifier=None):
    """One eps: both attacks `repeats` times, alternating; scores from the last run of each."""
    classifier = classifier or art_classifier(trainer)
    seconds = {"customfit": [], "art": []}
    cpu_seconds = {"customfit": [], "art": []}
    adversarial = {}
    for _ in range(repeats):
        for name, run in (
            ("customfit", lambda: customfit_attack(trainer, x, target, eps, steps, batch_size)),
            ("art", lambda: art_attack(classifier, x, target, eps, steps, batch_size)),
        ):
            start, start_cpu = time.perf_counter(), time.process_time()
            adversarial[name] = run()
            seconds[name].append(time.perf_counter() - start)
            cpu_seconds[name].append(time.process_time() - start_cpu)
    row = {"eps": eps, "steps": steps, "pairs": len(x)}
    predicted = {}
    for name in ("customfit", "art"):
        row[name], predicted[name] = score(trainer, x, adversarial[name], target, eps)
        row[name]["seconds"] = seconds[name]
        row[name]["median_seconds"] = statistics.median(seconds[name])
        # CPU time of this process (all its threads): less moved than wall time by other jobs.
        row[name]["cpu_seconds"] = cpu_seconds[name]
        row[name]["median_cpu_seconds"] = statistics.median(cpu_seconds[name])
    row["speed_ratio"] = row["art"]["median_seconds"] / row["customfit"]["median_seconds"]
    row["same_prediction"] = float(np.mean(predicted["customfit"] == predicted["art"]))
    row["max_abs_difference"] = float(np.abs(adversarial["customfit"] - adversarial["art"]).max())
    return row


def main(argv=None):
    import torch

    import art
    from customfit.tasks.adversarial import rules
    from customfit.tasks.adversarial import with_torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="360 pairs, 1 repeat, nothing written (a smoke run)"
    )
    parser.add_argument("--steps", type=int, default=rules.DEFAULT_STEPS["pgd"])
    parser.add_argument("--batch-size", type=int, default=with_torch.BATCH_SIZE)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (default 2); on cores other jobs share, 2 threads spin on "
        "each other and run several times slower than 1",
    )
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else REPEATS

    torch.set_num_threads(args.threads)
    load = {"start": os.getloadavg()[0]}
    start = time.perf_counter()
    trainer, data = train()
    clean = float(np.mean(trainer.predict_proba(data.x_test).argmax(axis=1) == data.y_test))
    print(
        f"trained in {time.perf_counter() - start:.1f} s, held-out accuracy {clean:.4f}", flush=True
    )
    x, target, _ = pairs(data, QUICK_DIGITS if args.quick else None)
    classifier = art_classifier(trainer, data.num_classes)
    rows = []
    for eps in EPSILONS:
        row = compare(trainer, x, target, eps, args.steps, args.batch_size, repeats, classifier)
        rows.append(row)
        c, a = row["customfit"], row["art"]
        print(
            f"eps {eps:.2f}  success customfit {c['success']:.4f} ART {a['success']:.4f}  "
            f"mean L-inf {c['mean_linf']:.4f} / {a['mean_linf']:.4f}  "
            f"{c['median_seconds']:.2f} s / {a['median_seconds']:.2f} s  "
            f"ratio {row['speed_ratio']:.2f}  same prediction {row['same_prediction']:.4f}  "
            f"inside {c['inside']} / {a['inside']}",
            flush=True,
        )
        if not (c["inside"] and a["inside"]):
            sys.exit(f"eps {eps}: an attack left the eps ball or [0, 1]")

    load["end"] = os.getloadavg()[0]
    factor = rules.pgd_step_size(1.0, args.steps) * args.steps
    cpu = cpu_name()
    meets = all(
        r["customfit"]["success"] >= r["art"]["success"]
        and r["customfit"]["median_seconds"] < r["art"]["median_seconds"]
        for r in rows
    )
    record = {
        "date": date.today().isoformat(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "quick": args.quick,
        "load_average_1min": load,
        "seconds_total": time.perf_counter() - start,
        "versions": {
            "torch": torch.__version__,
            "adversarial-robustness-toolbox": art.__version__,
            "numpy": np.__version__,
        },
        "model": "digits default CNN, torch engine",
        "epochs": EPOCHS,
        "train_batch_size": TRAIN_BATCH,
        "lr": LR,
        "seed": SEED,
        "held_out_accuracy": clean,
        "pairs": len(x),
        "steps": args.steps,
        "step_size": f"rules.pgd_step_size(eps, steps) = {factor:g} * eps / steps",
        "attack_batch_size": args.batch_size,
        "repeats": repeats,
        "customfit_at_least_art_success_in_less_time": meets,
        "rows": rows,
    }
    if args.quick:
        return  # a smoke run: nothing written
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "adversarial_peer.json").write_text(json.dumps(record, indent=2))
    busy = ": other jobs shared the cores" if max(load.values()) > 1.5 else ""
    lines = [
        f"Measured {record['date']} on {cpu} ({os.cpu_count()} cores), no GPU, torch on "
        f"{record['torch_threads']} thread{'s' if record['torch_threads'] > 1 else ''} (1-minute load average {load['start']:.1f} at the start, "
        f"{load['end']:.1f} at the end{busy}): targeted L-inf PGD on the digits default CNN (torch "
        f"engine, {EPOCHS} x {TRAIN_BATCH}, held-out accuracy {clean:.4f}), {len(x)} pairs (every held-out digit "
        f"toward each wrong label), {args.steps} steps of {factor:g} eps / {args.steps} from dx = 0, "
        f'batches of {args.batch_size}; customfit `Trainer.attack(method="pgd")` against ART '
        f"{art.__version__} `ProjectedGradientDescent` (PyTorch, num_random_init=0) on the same "
        f"module; time: the attack call, median of {repeats} alternating runs (wall clock, and the "
        f"process's CPU time).",
        "",
        "| eps | customfit success | ART success | customfit s | ART s "
        "| speed ratio (ART s / customfit s) | customfit CPU s | ART CPU s | CPU ratio "
        "| same prediction | max abs difference of the x_adv |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c, a = r["customfit"], r["art"]
        lines.append(
            f"| {r['eps']:.2f} | {c['success']:.4f} | {a['success']:.4f} "
            f"| {c['median_seconds']:.2f} | {a['median_seconds']:.2f} "
            f"| {r['speed_ratio']:.2f} | {c['median_cpu_seconds']:.2f} | {a['median_cpu_seconds']:.2f} "
            f"| {a['median_cpu_seconds'] / c['median_cpu_seconds']:.2f} | {r['same_prediction']:.4f} | {r['max_abs_difference']:.1e} |"
        )
    linf = ", ".join(
        f"{r['customfit']['mean_linf']:.4f} / {r['art']['mean_linf']:.4f}" for r in rows
    )
    lines += [
        "",
        f"Mean L-inf of the perturbation (customfit / ART, by eps): {linf}. Both stay inside "
        "the eps ball (to 1e-6) and [0, 1] at every eps. customfit "
        f"{'meets' if meets else 'does not meet'} \"at least ART's success at every eps, in "
        'less time".',
    ]
    (HERE / "results" / "adversarial_peer.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
