"""Running means of named figures over the samples seen so far, for the native engines' loops.

Weighted by batch size, so that a short last batch counts for what it holds, as Keras's metrics
do; every family's loop on every native engine keeps its figures in one of these.
"""


class RunningMeans:
    def __init__(self, names):
        self.sums = dict.fromkeys(names, 0.0)
        self.counts = dict.fromkeys(names, 0)

    def add(self, name, mean, n):
        """`mean` is the batch's mean of figure `name` over its `n` samples."""
        self.sums[name] += float(mean) * n
        self.counts[name] += int(n)

    def add_total(self, name, total, n):
        """`total` is the batch's sum of figure `name` (a count of correct answers, say)."""
        self.sums[name] += float(total)
        self.counts[name] += int(n)

    def add_all(self, figures, n):
        for name in self.sums:
            self.add(name, figures[name], n)

    def means(self):
        return {
            name: self.sums[name] / self.counts[name] for name in self.sums if self.counts[name]
        }
