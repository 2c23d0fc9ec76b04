"""One helper of the experiment scripts: run a command with its output in a log file and time it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def run_logged(command: list[str], log: Path, cwd: Path | None = None, nice: int = 0) -> float:
    """Run ``command`` (at ``nice`` priority, from ``cwd``) with stdout and stderr in ``log``; the wall time in
    seconds. A non-zero exit raises SystemExit naming the command and the log."""
    start = time.perf_counter()
    with Path(log).open("w") as out:
        code = subprocess.call(["nice", "-n", str(nice), *command] if nice else command, cwd=cwd, stdout=out,
                               stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed ({code}): see {log}")
    return time.perf_counter() - start
