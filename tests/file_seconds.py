"""The seconds each test file took in a default run, which tests/conftest.py uses to start the
heaviest files first, and the command that measures them again:

    ./run tests --durations=0 > durations.txt; .venv/bin/python tests/file_seconds.py durations.txt

The test workers each take a file at a time (pytest-xdist's --dist loadfile). By default
xdist hands them out by number of tests, so a file of a few long tests (then tests/keras_core's
suites) could start last while the other workers sat idle; the largest first leaves the short
files to fill the end. Replayed over a measured run's durations, the order alone took the
critical worker from 1633 s to 1515 s, against 1513 s for a perfect split."""

import collections
import json
import re
import sys
from pathlib import Path

TABLE = Path(__file__).with_name("file_seconds.json")
DURATION = re.compile(r"^([0-9.]+)s (?:setup|call|teardown)\s+(tests/[^:]+\.py)::")


def measured():
    """{test file: seconds} as last measured; a file not in it counts 0 (it starts last)."""
    if not TABLE.exists():
        return {}
    return json.loads(TABLE.read_text())["seconds"]


def from_durations(lines):
    seconds = collections.Counter()
    for line in lines:
        match = DURATION.match(line)
        if match:
            seconds[match.group(2)] += float(match.group(1))
    return {name: round(s, 1) for name, s in seconds.most_common()}


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        table = {"measured by": "tests/file_seconds.py", "seconds": from_durations(f)}
    TABLE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {TABLE}: {len(table['seconds'])} files")
