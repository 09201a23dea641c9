"""Training with checkpoints: the Trainer built (or restored, on resume or from another run),
the initial checkpoint, the run loop (customfit.engines.loop) with its checkpoint per epoch;
what was trained comes back as a Trained, for the results (customfit.runs.results)."""

import os
from dataclasses import dataclass

from customfit import precision, registry
from customfit import devices as spreading
from customfit.errors import CheckpointError, CustomfitError
from customfit.runs.plan import CHECKPOINT, HISTORY, METRICS
from customfit.runs.stops import stopping


@dataclass(frozen=True)
class Trained:
    """What training leaves for the results: the trained Trainer, the data it trained on, the
    history (every epoch, those of a resumed run included), how many epochs came before this run,
    the checkpoint's meta, the paths written so far, the epoch resumed after and the run started
    from (else None), and the dtype policy it computed in."""

    trainer: object
    split: object
    history: list
    trained_before: int
    meta: dict
    paths: dict
    resumed_from: int | None
    started_from: str | None
    policy: str


def train(plan):
    """Train the plan's Trainer under the run loop, with its checkpoints; what was trained, or
    None in a torch process other than rank 0 (it trains with the others, writes nothing)."""
    from customfit import checkpoint
    from customfit.engines import loop

    task, engine, spec, settings = plan.task, plan.engine, plan.spec, plan.settings
    split, out = plan.split or spec.load(), plan.out
    # One of several torch processes: all train, rank 0 alone writes and judges.
    grouped = settings.get("devices", 1) > 1 and engine in spreading.TORCH_ENGINES
    writes = True
    if grouped:
        from customfit.parallel import process_group

        writes = process_group.join()[0] == 0
    try:
        trainer_class = registry.trainer_class(task, engine)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("customfit."):
            raise CustomfitError(
                f"engine {engine} is not implemented for task {task} yet ({e.name})"
            ) from None
        raise
    # Before the Trainer builds its layers: Keras's dtype policy applies to layers made after it.
    policy = precision.use(engine, settings.get("precision", precision.DEFAULT))
    trainer = spec.build_trainer(trainer_class, split, settings)
    history, resumed_from, started_from = [], None, None
    source = plan.resumed or plan.start
    if source is not None:
        arrays, meta = source
        try:
            history = loop.restore(trainer, arrays, meta)
        except Exception as e:
            field = "resume" if plan.resumed is not None else registry.hook(spec, "START_OPTION")
            raise CheckpointError.expected(
                field,
                f"a checkpoint whose state fits the {engine} trainer",
                given=f"one it refuses ({' '.join(str(e).split())[:100]})",
            ) from None
        if plan.resumed is not None:
            resumed_from = meta["epoch"]
        else:
            started_from = settings.get(registry.hook(spec, "START_OPTION"))
    trained_before = len(history)

    paths = {
        "checkpoint": os.path.join(out, CHECKPOINT),
        "history": os.path.join(out, HISTORY),
        "metrics": os.path.join(out, METRICS),
    }

    def write_history(rows):
        checkpoint.atomic_write(paths["history"], loop.history_csv(rows))

    after_epoch = registry.hook(spec, "after_epoch")
    board = None
    if plan.tensorboard is not None and writes:  # rank 0 alone, as for every file
        from customfit.engines import event_logs

        board = event_logs.open_writer(engine, plan.tensorboard, trainer)
        paths["tensorboard"] = plan.tensorboard

    def on_epoch_end(rows):
        write_history(rows)
        if board is not None:
            board.write(rows[-1])
        if after_epoch is not None:
            after_epoch(trainer, settings, rows[-1]["epoch"], out)

    config = {k: settings[k] for k in settings}
    meta = {
        "task": task,
        "engine": engine,
        "model": settings["model"],
        "config": config,
        "data_sha256": plan.data_digest,
    }
    lr_changes = changed_lrs(plan, trained_before)
    if lr_changes:
        meta["lr_changes"] = lr_changes
    if source is None and writes:
        # The initial state, so that a run stopped in its first epoch (killed, Ctrl-C, a NaN)
        # can be resumed like any other.
        arrays, trainer_meta = trainer.state()
        with stopping(plan, paths):
            checkpoint.save(
                paths["checkpoint"],
                arrays,
                {**meta, "epoch": 0, "history": [], "trainer": trainer_meta},
            )
    try:
        with stopping(plan, paths):
            history = loop.fit(
                trainer,
                split,
                epochs=settings["epochs"],
                batch_size=settings["batch_size"],
                seed=settings["seed"],
                checkpoint_path=paths["checkpoint"] if writes else None,
                meta=meta,
                history=history,
                on_epoch_end=on_epoch_end if writes else None,
                verbose=plan.verbose and writes,
            )
    finally:
        if board is not None:
            board.close()
    if grouped:
        process_group.leave()
    if not writes:
        return None
    return Trained(
        trainer=trainer,
        split=split,
        history=history,
        trained_before=trained_before,
        meta=meta,
        paths=paths,
        resumed_from=resumed_from,
        started_from=started_from,
        policy=policy,
    )


def changed_lrs(plan, trained_before):
    """The learning rates a resumed run changed to, after a stop on a non-finite loss:
    [{"epoch": first epoch at the new rate, "lr": rate}, ...]."""
    if plan.resumed is None:
        return []
    previous = plan.resumed[1]
    changes = list(previous.get("lr_changes") or [])
    if plan.settings["lr"] != previous["config"]["lr"]:
        changes.append({"epoch": trained_before + 1, "lr": plan.settings["lr"]})
    return changes
