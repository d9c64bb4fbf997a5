"""The benchmarks' protocol: each case runs in a fresh process (so peak memory
is its own) and prints one ``RESULT {json}`` line."""

from __future__ import annotations

import json
import subprocess
import sys


def report(row: dict) -> None:
    """Called inside a case process."""
    print("RESULT " + json.dumps(row), flush=True)


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


def case_command(script: str, args, **case) -> list[str]:
    """The command running one case of ``script``: every parsed option of
    ``args`` forwarded (option names are the ``dest`` names), ``case`` on top."""
    options = {**vars(args), **case, "case": True}
    cmd = [sys.executable, script]
    for name, value in options.items():
        if value is True:
            cmd.append(f"--{name}")
        elif value is not None and value is not False:  # 0 is a value
            cmd.append(f"--{name}={value}")
    return cmd
