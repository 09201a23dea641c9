"""customfit/cpu_memory.py: freed blocks stay in the process, so that a step's tensors of the same
sizes are not page-faulted in again every step."""

import subprocess
import sys

import pytest

# Twenty passes that each allocate and write four blocks of 8 MiB, then free them, as a training
# step does with its activations; the page faults the passes take, in a fresh process with or
# without keep_freed().
PROBE = """
import resource, sys
import numpy as np
from customfit import cpu_memory
kept = cpu_memory.keep_freed() if sys.argv[1] == "keep" else None
np.ones(1 << 20).sum()  # numpy's own first-use allocations, outside the count
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    blocks = [np.ones(1 << 20) for _ in range(4)]  # 8 MiB of float64 each, every page written
    del blocks
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_BLOCK = (8 << 20) // 4096


def _faults(mode):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    kept, faults = done.stdout.split()
    return kept, int(faults)


def test_freed_blocks_are_reused_without_faulting_their_pages_in_again():
    if not sys.platform.startswith("linux"):
        pytest.skip("keep_freed() sets glibc's malloc; this machine is not Linux")
    kept, faults_kept = _faults("keep")
    if kept != "True":
        pytest.skip("this Linux's C library is not glibc: keep_freed() leaves it as it is")
    _, faults_default = _faults("default")
    # glibc's default: the first free lifts the mmap threshold to 8 MiB and the trim threshold
    # to twice that, so the blocks then come from the heap, but what is freed at its top past
    # the trim threshold goes back to the system: every pass faults pages in again (measured:
    # about one block's worth).
    assert faults_default >= 19 * PAGES_PER_BLOCK, faults_default
    # Kept: the first pass faults them in, the other 19 reuse them.
    assert faults_kept <= 2 * 4 * PAGES_PER_BLOCK, faults_kept
