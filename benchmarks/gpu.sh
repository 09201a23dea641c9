#!/usr/bin/env bash
# Exercise 10 (the lecture's CPU-against-GPU exercise) on a machine with a GPU: sets up
# .venv-gpu with the GPU builds of the versions constraints.txt pins, runs `customfit bench` for
# mnist and digits on the six engines on the CPU, then on the GPU (float32 and mixed), and
# writes the CPU/GPU table. Run it from anywhere:
#
#     bash benchmarks/gpu.sh [OUT]          # default OUT: benchmarks/results/gpu
#
# Settings, from the environment:
#   GPU_SH_PYTHON=PATH   use this Python, install nothing (e.g. .venv/bin/python)
#   GPU_SH_ENGINES="..." engines (default: all six)
#   GPU_SH_TASKS="..."   bench tasks (default: mnist digits)
#   GPU_SH_BENCH="..."   more `customfit bench` flags (default: --batch-sizes 32 128)
# Without a GPU (none visible to torch, TensorFlow or JAX) it runs the CPU half and says so.
# MNIST: Keras's cached mnist.npz where present, else bench's stand-in of MNIST's shape
# (throughput does not depend on what the digits show; nothing is downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
engines=${GPU_SH_ENGINES:-tensorflow torch flax keras-tensorflow keras-torch keras-jax}
tasks=${GPU_SH_TASKS:-mnist digits}
# --threads 0: each framework's own threads, the whole CPU against the GPU (bench holds each
# engine to one thread and one CPU unless told)
bench_flags="--threads 0 ${GPU_SH_BENCH:---batch-sizes 32 128}"

# A package's pinned version; pip writes a name's '-' as '_' or '-', so both are matched.
pin() { grep -iE "^${1//-/[-_]}==" constraints.txt | cut -d= -f3; }

if [ -n "${GPU_SH_PYTHON:-}" ]; then
    python=$GPU_SH_PYTHON
else
    python=.venv-gpu/bin/python
    [ -x "$python" ] || python3.11 -m venv .venv-gpu
    "$python" -m pip install -q --upgrade pip
    # torch's default Linux wheel is its CUDA build; TensorFlow and JAX bring CUDA as extras.
    # constraints.txt pins the CPU machine's set (tensorflow-cpu), so only these pins are taken.
    "$python" -m pip install -q -e . "torch==$(pin torch)" "tensorflow[and-cuda]==$(pin tensorflow-cpu)" \
        "keras==$(pin keras)" "jax[cuda12]==$(pin jax)" "flax==$(pin flax)" "optax==$(pin optax)" \
        "scikit-learn==$(pin scikit-learn)" "matplotlib==$(pin matplotlib)"
fi

# The frameworks that see a GPU, asked the way `customfit run` asks (customfit/compute_device.py).
gpu_seen=$("$python" -c '
from customfit import compute_device, registry
seen = []
for engine in ("torch", "flax", "tensorflow"):
    try:
        seen += [registry.KERAS_BACKEND[engine]] if compute_device.framework_sees_gpu(engine) else []
    except Exception:  # a framework not installed, or one that cannot start here
        pass
print(" ".join(seen))
')

mkdir -p "$out"
echo "== CPU: customfit bench --device cpu ($engines)"
# shellcheck disable=SC2086  # the flags are words on purpose
"$python" -m customfit bench --tasks $tasks --engines $engines --device cpu \
    $bench_flags --out "$out/cpu"
if [ -z "$gpu_seen" ]; then
    echo "== GPU: none visible to torch, TensorFlow or JAX here; the table has the CPU column only"
    "$python" benchmarks/gpu_table.py "$out/cpu/bench.json" > "$out/cpu_gpu.md"
else
    echo "== GPU (seen by: $gpu_seen): customfit bench --device gpu --precision both"
    # shellcheck disable=SC2086
    "$python" -m customfit bench --tasks $tasks --engines $engines --device gpu \
        --precision both $bench_flags --out "$out/gpu"
    name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
    "$python" - "$out/gpu/bench.json" "${name:-unknown GPU}" <<'EOF'
import json, sys
path, name = sys.argv[1:]
record = json.load(open(path))
record["gpu"] = name
json.dump(record, open(path, "w"), indent=2)
EOF
    "$python" benchmarks/gpu_table.py "$out/cpu/bench.json" "$out/gpu/bench.json" > "$out/cpu_gpu.md"
fi
cat "$out/cpu_gpu.md"
echo "wrote $out/cpu_gpu.md"
