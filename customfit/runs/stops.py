"""The ways a run can stop early, turned into one line that says where it stopped, what the
checkpoint keeps and how to go on; the kept checkpoint marked where a loss went non-finite."""

import os

from customfit.errors import (
    CheckpointError,
    Interrupted,
    NonFiniteLoss,
    RunStopped,
    UsageError,
    WriteError,
)


def resume_command(plan, lr=None):
    """The command line that continues this run."""
    import shlex

    spec, settings = plan.spec, plan.settings
    words = ["customfit", "run", plan.task, "--engine", plan.engine, "--out", plan.out]
    if settings["model"] != spec.DEFAULTS["model"]:
        words += ["--model", settings["model"]]
    if isinstance(plan.data_given, (str, os.PathLike)):
        words += ["--data", os.fspath(plan.data_given)]
    words.append("--resume")
    if lr is not None:  # a suggestion: short
        words += ["--lr", f"{lr:.3g}"]
    elif plan.resumed is not None and plan.resumed[1]["config"]["lr"] != settings["lr"]:
        # Changed on this resume, and maybe not in the checkpoint yet: exactly as given.
        words += ["--lr", repr(settings["lr"])]
    return shlex.join(words)


def what_is_kept(path):
    """(epoch, words) for what the checkpoint on disk holds now."""
    from customfit import checkpoint

    try:
        _, meta = checkpoint.load(path)
    except CheckpointError:
        return None, f"no checkpoint could be kept in {os.path.dirname(path) or '.'}"
    epoch = meta.get("epoch")
    held = "the initial weights (epoch 0)" if epoch == 0 else f"epoch {epoch}"
    return epoch, f"{path} keeps {held}"


def mark_stopped(path, stop):
    """Note in the kept checkpoint that its run stopped on a non-finite loss: resuming it may
    then change --lr."""
    from customfit import checkpoint

    try:
        arrays, meta = checkpoint.load(path)
        meta["stopped"] = {"why": stop.why, "epoch": stop.epoch, "step": stop.step}
        checkpoint.save(path, arrays, meta)
    except (CheckpointError, WriteError):
        pass  # the checkpoint stays as it was, and still resumes at the same learning rate


class stopping:
    """Turns the ways a run can stop early into one line that says where it stopped, what the
    checkpoint keeps and how to go on: a non-finite loss (exit status 3), Ctrl-C (130), a write
    that failed (1)."""

    def __init__(self, plan, paths, trained=False):
        self.plan, self.paths, self.trained = plan, paths, trained

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        from customfit.engines.loop import Stopped

        if (
            error is None
            or isinstance(error, (UsageError, RunStopped))
            and not isinstance(error, WriteError)
        ):
            return False
        plan, path = self.plan, self.paths["checkpoint"]
        if isinstance(error, Stopped):
            if error.why in ("nonfinite", "diverged"):
                mark_stopped(path, error)
                _, kept = what_is_kept(path)
                lr = plan.settings["lr"]
                default_lr = plan.spec.DEFAULTS["lr"]
                lower = default_lr if lr > default_lr else lr / 10
                if error.why == "nonfinite":
                    what = " and ".join(f"{k} = {v}" for k, v in error.figures.items())
                else:
                    what = " and ".join(
                        f"{k} rose from {error.first[k]:.4g} to {v:.4g}"
                        for k, v in error.figures.items()
                    )
                raise NonFiniteLoss(
                    f"{what} at epoch {error.epoch}, step {error.step} of {error.steps} "
                    f"(lr {lr:g}): training stopped; {kept}; go on with a lower learning rate: "
                    f"{resume_command(plan, lower)}"
                ) from None
            where = (
                f"after epoch {error.epoch}"
                if error.checkpointed
                else f"after step {error.step} of {error.steps} in epoch {error.epoch}"
            )
            _, kept = what_is_kept(path)
            raise Interrupted(
                f"Ctrl-C {where}; {kept}; go on with: {resume_command(plan)}"
            ) from None
        if isinstance(error, KeyboardInterrupt):
            when = "after training" if self.trained else "during training"
            _, kept = what_is_kept(path)
            raise Interrupted(
                f"Ctrl-C {when}; {kept}; go on with: {resume_command(plan)}"
            ) from None
        if isinstance(error, WriteError):
            _, kept = what_is_kept(path)
            raise WriteError(
                f"{error.message}; {kept}; when there is room again, go on with: "
                f"{resume_command(plan)}"
            ) from None
        return False
