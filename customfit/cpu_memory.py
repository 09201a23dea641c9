"""Keep the memory a training step frees inside the process, for the next step to reuse.

PyTorch on the CPU takes every activation and gradient from malloc and frees it within the step.
glibc's malloc hands large freed blocks back to the operating system (blocks over its mmap
threshold at once, the heap's free top past its trim threshold), so the next step's tensors of
the same sizes are page-faulted in again, a page at a time. Measured on this project's 2-core CPU
(mnist's CNN, batch 128, keras-torch): about 7,500 page faults a step and a fifth of the step's
CPU time; with the blocks kept, a few faults per 20 steps. PyTorch's performance guide gets the
same by swapping in jemalloc or tcmalloc; mallopt() does it with the allocator already loaded.
TensorFlow and XLA (the jax engines) keep their own pools: no change measured there.

Only customfit's whole runs call this (`customfit run`, `cf.run`, bench's workers), never
cf.Model: it changes the whole process's allocator, which a model class inside a user's program
should not do. The same settings from outside, for a script of one's own:
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647.
"""

import ctypes

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks larger
# than this still come from mmap.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
# mallopt takes an int: the heap's top is trimmed only past 2 GiB of free memory.
TRIM_THRESHOLD = 2**31 - 1


def keep_freed():
    """Tell glibc's malloc to keep freed blocks (up to 32 MiB each) for reuse. True where it
    took both settings; False on another C library or where mallopt refused."""
    try:
        # The C library already loaded into this process (find_library would start ldconfig).
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    # gnu_get_libc_version exists only in glibc: musl's or macOS's mallopt means otherwise.
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
