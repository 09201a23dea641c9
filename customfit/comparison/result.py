"""What `customfit compare` found: the result object cf.compare() returns, its table and verdict
line, and its JSON. Imports no framework."""

from dataclasses import dataclass, field

NOISE = (
    "keras.random's normal, uniform, truncated_normal, randint, categorical, shuffle and dropout "
    "(Dropout layers too) drawn from numpy.random.default_rng({seed}), reset before each "
    "evaluation: the same numbers, in the same order, on every backend"
)
REFERENCE = "the float64 reference (Keras on JAX, jax_enable_x64, floatx float64)"


@dataclass
class Comparison:
    """The numbers of one cf.Model on several Keras backends, side by side.

    Attributes:
        agree: every backend ran, and each number is within `rtol` of the reference's.
        exit_status: 0 when they agree, 1 when not (the command line's).
        against: what each backend was compared with (the float64 reference, or each other).
        worst: {backend: diff.Worst}: the largest relative difference, where, and the values
            there on every side.
        differences: {"<update>/<training|inference|gradient>/<entry or variable path>":
            {backend: relative difference}}.
        objective: {side: {"<update>/<training|inference>/<entry>": value}}, the reference too.
        speed: {backend: {"steps_per_second", "samples_per_second", "median_seconds", ...}}.
        fastest: the backend with the most steps per second.
        errors: {backend (or "float64"): why it gave no numbers}.
    """

    backends: list
    rtol: float
    against: str
    noise: str
    worst: dict
    differences: dict
    objective: dict
    speed: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)

    @property
    def agree(self):
        return not any(b in self.errors for b in self.backends) and all(
            w.relative <= self.rtol for w in self.worst.values()
        )

    @property
    def exit_status(self):
        return 0 if self.agree else 1

    @property
    def fastest(self):
        timed = {b: s["steps_per_second"] for b, s in self.speed.items() if s}
        return max(timed, key=timed.get) if timed else None

    def verdict(self):
        if self.agree:
            line = f"agree: every backend within rtol {self.rtol:g} of {self.against}"
        else:
            wrong = [
                f"{b} failed ({self.errors[b]})" if b in self.errors else self._differs(b)
                for b in self.backends
                if b in self.errors or self.worst[b].relative > self.rtol
            ]
            line = f"DIFFER beyond rtol {self.rtol:g} from {self.against}: " + "; ".join(wrong)
        if self.fastest:
            rate = self.speed[self.fastest]["steps_per_second"]
            line += f"; fastest: {self.fastest} ({rate:.1f} steps/s)"
        return line

    def beyond(self, backend):
        """The keys where `backend` differs by more than rtol, the largest difference first."""
        found = {
            k: row[backend]
            for k, row in self.differences.items()
            if row.get(backend, 0) > self.rtol
        }
        return sorted(found, key=found.get, reverse=True)

    def _differs(self, backend):
        worst = self.worst[backend]
        others = [k.split("/", 2)[2] for k in self.beyond(backend) if k != worst.key]
        return f"{backend} by {worst.relative:.3g} at {worst.where} ({_values(worst.values)})" + (
            f", and at {', '.join(others)}" if others else ""
        )

    def table(self):
        rows = [
            (
                "backend",
                "objective (training on)",
                "worst difference",
                "where",
                "steps/s",
                "samples/s",
            )
        ]
        for side in [*self.backends, *(["float64"] if "float64" in self.objective else [])]:
            losses = ", ".join(
                f"{k.split('/')[0]} {v:.6g}"
                for k, v in self.objective.get(side, {}).items()
                if k.split("/")[1:] == ["training", "loss"]
            )
            speed = self.speed.get(side) or {}
            worst = self.worst.get(side)
            rows.append(
                (
                    side,
                    losses or self.errors.get(side, "-")[:60],
                    "-" if worst is None else f"{worst.relative:.2e}",
                    "-" if worst is None else worst.where,
                    f"{speed['steps_per_second']:.1f}" if speed else "-",
                    f"{speed['samples_per_second']:.0f}" if speed else "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def to_json(self):
        return {
            "agree": self.agree,
            "exit_status": self.exit_status,
            "rtol": self.rtol,
            "backends": self.backends,
            "against": self.against,
            "noise": self.noise,
            "verdict": self.verdict(),
            "worst": {
                b: {
                    "relative": w.relative,
                    "where": w.where,
                    "key": w.key,
                    "index": list(w.index),
                    "values": w.values,
                }
                for b, w in self.worst.items()
            },
            "differences": self.differences,
            "objective": self.objective,
            "speed": self.speed,
            "fastest": self.fastest,
            "errors": self.errors,
        }


def _values(values):
    return ", ".join(f"{side} {'-' if v is None else f'{v:.6g}'}" for side, v in values.items())
