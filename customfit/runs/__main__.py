"""The subprocess's side of a run: `python -m customfit.runs REQUEST.json`."""

import sys

from customfit.runs import run
from customfit.runs.launch import answer_request

if __name__ == "__main__":
    sys.exit(answer_request(sys.argv[1], run))
