"""Running mean loss and accuracy over the examples seen so far, for the native engines' loops.

Weighted by batch size, so a short last batch counts for what it holds, as in Keras's metrics.
"""


class Tally:
    def __init__(self):
        self.loss_sum = 0.0
        self.correct = 0
        self.seen = 0

    def add(self, mean_loss, correct, n):
        self.loss_sum += float(mean_loss) * n
        self.correct += int(correct)
        self.seen += int(n)

    def means(self):
        return {"loss": self.loss_sum / self.seen, "accuracy": self.correct / self.seen}
