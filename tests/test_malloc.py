"""The training malloc settings: freed tensor-sized buffers are reused without page faults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocates and frees buffers of mixed sizes (MiB), as a network's activations do, and prints the
# minor page faults of the repeated rounds; argv[1] == "1" applies keep_freed_memory first.
WORKLOAD = """
import resource, sys
import numpy as np
from sprint2.malloc import keep_freed_memory
if sys.argv[1] == "1":
    assert keep_freed_memory()
sizes = [24, 3, 16, 1, 30, 8, 12]
arrays = [np.ones((s << 20) // 8) for s in sizes]
del arrays
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    arrays = [np.ones((s << 20) // 8) for s in sizes]
    del arrays
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(tuned: bool, env: dict[str, str] | None = None) -> int:
    out = subprocess.run(
        [sys.executable, "-c", WORKLOAD, "1" if tuned else "0"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_keep_freed_memory_stops_page_faults_on_reused_buffers() -> None:
    default, tuned = _faults(False), _faults(True)
    # 10 rounds of 94 MiB touched: glibc's defaults fault most pages in again every round.
    assert default > 10_000, f"the workload no longer shows glibc's default behaviour ({default} faults)"
    assert tuned < default / 10, f"{tuned} page faults with the settings, {default} without"


def test_keep_freed_memory_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import sprint2.malloc as malloc

    monkeypatch.setattr(malloc, "_applied", None)
    monkeypatch.setenv(malloc.ENV_SWITCH, "0")
    assert malloc.keep_freed_memory() is False
    monkeypatch.delenv(malloc.ENV_SWITCH)
    assert malloc.keep_freed_memory() is False, "the first answer holds for the process"
