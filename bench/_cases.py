"""The benchmarks' protocol, shared by every script of ``bench/``.

Flags are absl's, as in ``zoo/``. A script defines its flags, a ``measure()``
that times one case from them, and the cases of its sweep (dicts of flag
values); `main` then runs each case in a fresh process (the script itself,
with its flags plus the case's and ``--case``), so that compilation caches
and peak memory are the case's own. A case prints one ``RESULT {json}``
line; the sweep prints each row as JSON and a Markdown table at the end.

`memory_mark` / `peak_mib` are the one device-memory measure: the GPU
allocator's peak on a GPU (JAX or PyTorch), the process's peak resident set
(VmHWM) on a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
flags.DEFINE_bool("case", False, "Run one case of the sweep and print its RESULT line.")
flags.DEFINE_integer("timeout", 600, "Seconds per case.", lower_bound=1)


def main(
    measure: Callable[[], dict],
    cases: Callable[[], Iterable[dict]],
    columns: dict[str, Callable[[dict], object] | str],
) -> None:
    """The script's entry point: one case (``--case``) or the whole sweep.
    ``columns``: Markdown table header -> row key or function of the row."""

    def run(argv):
        del argv
        if FLAGS.case:
            print("RESULT " + json.dumps(measure()), flush=True)
            return
        rows = []
        for case in cases():
            row = run_case(case_command(case), case, FLAGS.timeout)
            print(json.dumps(row), flush=True)
            rows.append(row)
        print("\n" + table(rows, columns))

    app.run(run)


def case_command(case: dict) -> list[str]:
    """This script with the command line it was given, the case's flag values
    on top (later values win) and ``--case``."""
    values = [f"--{k}={v}" for k, v in case.items()]
    return [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:], *values, "--case"]


def run_case(cmd: list[str], row: dict, timeout: int) -> dict:
    """Runs one case; returns its result, or ``row`` with an ``error``."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timeout after {timeout}s"}
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if found:
        return json.loads(found[-1][len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    oom = proc.returncode == -9 or any("memory" in ln.lower() or "oom" in ln.lower() for ln in tail)
    return {**row, "error": "out of memory" if oom else " | ".join(tail)}


def table(rows: list[dict], columns: dict) -> str:
    """A Markdown table; a row with an ``error`` shows it in its second column."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [value(row, column) for column in columns.values()]
        if "error" in row:
            cells = [cells[0], row["error"], *[""] * (len(cells) - 2)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def value(row: dict, column) -> object:
    return column(row) if callable(column) else row.get(column, "")


# ---------------------------------------------------------------- memory
def _backend_gpu() -> str | None:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "jax" if jax.default_backend() == "gpu" else None
    if backend == "torch":
        import torch

        return "torch" if torch.cuda.is_available() else None
    return None


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_mark() -> float:
    """MiB in use now (GPU allocator, or the process's resident set on CPU);
    on PyTorch also restarts the peak count."""
    gpu = _backend_gpu()
    if gpu == "jax":
        import jax

        return jax.devices()[0].memory_stats()["bytes_in_use"] / 2**20
    if gpu == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    return _status_mib("VmRSS")


def peak_mib(since: float = 0.0) -> float:
    """Peak MiB in use (GPU allocator, or the process's VmHWM on CPU) minus ``since``."""
    gpu = _backend_gpu()
    if gpu == "jax":
        import jax

        peak = jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
    elif gpu == "torch":
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _status_mib("VmHWM")
    return round(peak - since, 1)
