"""Where TensorFlow cannot compute in float16 or bfloat16 at all: under an ONEDNN_MAX_CPU_ISA cap
below an instruction set this CPU has.

TensorFlow (its oneDNN ops on, the default) sends float16 and bfloat16 matmuls and convolutions to
oneDNN when the CPU's own flags say oneDNN can run them (avx512_fp16 for float16, AVX-512 for
bfloat16); the cap does not change those flags, so oneDNN, held below them, finds no kernel and
the process aborts ("could not create a primitive descriptor for the inner product forward
propagation primitive"). A CPU that lacks the flags never takes that path, so no real machine is
like this; the tests of TensorFlow's low precision skip under such a cap, saying so. Measured on
this project's Xeon (tests/kernel_settings.md): float16 needs the cap at AVX512_CORE_FP16 or
above, bfloat16 at AVX512_CORE or above."""

import os

# oneDNN's dispatcher names, lowest first (aliases share a rank).
_RANKS = {
    "SSE41": 0,
    "AVX": 1,
    "AVX2": 2,
    "AVX2_VNNI": 3,
    "AVX2_VNNI_2": 4,
    "AVX512_CORE": 5,
    "AVX512_CORE_VNNI": 6,
    "AVX512_CORE_BF16": 7,
    "AVX512_CORE_FP16": 8,
    "AVX10_1_512": 8,
    "AVX512_CORE_AMX": 9,
    "AVX10_1_512_AMX": 9,
    "AVX512_CORE_AMX_FP16": 10,
    "AVX10_1_512_AMX_FP16": 10,
}
# dtype -> (the lowest cap at which oneDNN runs it here, the CPU flag TensorFlow decides by)
_NEEDS = {"float16": ("AVX512_CORE_FP16", "avx512_fp16"), "bfloat16": ("AVX512_CORE", "avx512f")}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            line = next((row for row in f if row.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def tensorflow_cannot(dtype):
    """Why TensorFlow aborts on `dtype` ("float16" or "bfloat16") in this environment, or None
    where it can compute in it."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap not in _RANKS or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return None
    lowest, flag = _NEEDS[dtype]
    if _RANKS[cap] >= _RANKS[lowest] or flag not in _cpu_flags():
        return None
    return (
        f"TensorFlow aborts on {dtype} under ONEDNN_MAX_CPU_ISA={cap} on a CPU with {flag}: it "
        f"sends {dtype} to oneDNN by the CPU's flags, and oneDNN, capped below {lowest}, has no "
        "kernel for it (tests/kernel_caps.py)"
    )
