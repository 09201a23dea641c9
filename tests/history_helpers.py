"""Reading back the history.csv a run writes (customfit.engines.loop.history_csv writes it)."""

import csv


def read_history_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]
