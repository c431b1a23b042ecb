"""Running `sprint2 train --strategy multiworker` as several local processes over loopback ports.

What the multi-worker tests and notebook 06 share: free ports, one TF_CONFIG per worker, each worker's
stdout/stderr in files and its own TMPDIR (where a non-chief worker keeps its scratch copy of the run).
Light: nothing here imports TensorFlow; the workers do, in their own processes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

# The loop's per-epoch log line as `sprint2 -v` prints it: "INFO sprint2.training: epoch 3/10: loss=...".
_EPOCH_LINE = re.compile(r"^\w+ sprint2\.training: (epoch \d+/\d+: .*)$")


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports that were free a moment ago (bound to port 0 together, then released)."""
    import socket

    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class LocalWorkers:
    """`python -m sprint2 -v train *train_args --strategy multiworker --out out_dir --json`, once per worker.

    Worker i gets TF_CONFIG task i of one loopback cluster, TMPDIR log_dir/tmp{i}, and its output in
    log_dir/worker{i}.out and .err. Use as `with LocalWorkers(...).start() as workers:`; leaving the
    block kills whatever still runs. `env` is added to (and overrides) this process's environment.
    """

    def __init__(
        self,
        train_args: Sequence[str],
        out_dir: Path,
        log_dir: Path,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"need at least one worker, got {workers}")
        self.train_args = [str(a) for a in train_args]
        self.out_dir, self.log_dir = Path(out_dir), Path(log_dir)
        self.env = dict(env or {})
        self.addresses: list[str] = [f"127.0.0.1:{p}" for p in free_ports(workers)]
        self.tf_configs: list[dict] = [
            {"cluster": {"worker": list(self.addresses)}, "task": {"type": "worker", "index": i}}
            for i in range(workers)
        ]
        self._procs: list[subprocess.Popen] = []

    def _command(self) -> list[str]:
        """The command line every worker runs (only the environment differs between them)."""
        return [
            sys.executable,
            "-m",
            "sprint2",
            "-v",
            "train",
            *self.train_args,
            "--strategy",
            "multiworker",
            "--out",
            str(self.out_dir),
            "--json",
        ]

    def start(self) -> LocalWorkers:
        """Starts every worker; returns self."""
        if self._procs:
            raise RuntimeError("these workers were started already; make a new LocalWorkers to run again")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i, tf_config in enumerate(self.tf_configs):
            self.scratch_dir(i).mkdir(parents=True, exist_ok=True)
            env = {
                **os.environ,
                "TF_CPP_MIN_LOG_LEVEL": "2",
                **self.env,
                "TF_CONFIG": json.dumps(tf_config),
                "TMPDIR": str(self.scratch_dir(i)),
            }
            with self._log(i, "out").open("w") as out, self._log(i, "err").open("w") as err:
                self._procs.append(subprocess.Popen(self._command(), env=env, stdout=out, stderr=err))
            logger.info("worker %d started (pid %d): TF_CONFIG=%s", i, self._procs[-1].pid, env["TF_CONFIG"])
        return self

    def _proc(self, i: int) -> subprocess.Popen:
        if not self._procs:
            raise RuntimeError("the workers have not been started: call start() first")
        return self._procs[i]

    def _log(self, i: int, kind: str) -> Path:
        return self.log_dir / f"worker{i}.{kind}"

    def poll(self, i: int) -> int | None:
        """Worker i's exit code, or None while it runs."""
        return self._proc(i).poll()

    def wait(self, i: int, timeout: float) -> int:
        """Worker i's exit code; after timeout seconds, subprocess.TimeoutExpired (it keeps running)."""
        return self._proc(i).wait(timeout=timeout)

    def run_to_end(self, timeout: float) -> list[int]:
        """Every worker's exit code; at the timeout (one deadline for all) whatever still runs is killed."""
        self._proc(0)  # not started: a clear error
        deadline = time.monotonic() + timeout
        for i in range(len(self._procs)):
            try:
                self.wait(i, max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker %d still running after %.0f s: killing every worker", i, timeout)
                break
        self.kill()
        return [int(p.returncode) for p in self._procs]

    def kill(self, i: int | None = None) -> None:
        """Kills worker i (SIGKILL), or every worker still running when i is None, and reaps it."""
        procs = self._procs if i is None else [self._proc(i)]
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)

    def stdout(self, i: int) -> str:
        """Everything worker i printed to stdout so far."""
        path = self._log(i, "out")
        return path.read_text() if path.is_file() else ""

    def stderr(self, i: int) -> str:
        """Everything worker i wrote to stderr so far (its log)."""
        path = self._log(i, "err")
        return path.read_text() if path.is_file() else ""

    def metrics(self, i: int) -> dict:
        """Worker i's --json output (run_training's metrics), {} when it printed none or only part of it."""
        text = self.stdout(i)
        if "{" not in text:
            return {}
        try:
            return json.loads(text[text.index("{") :])
        except json.JSONDecodeError:
            return {}

    def scratch_dir(self, i: int) -> Path:
        """Worker i's TMPDIR."""
        return self.log_dir / f"tmp{i}"

    def epoch_lines(self, i: int) -> list[str]:
        """The epoch lines worker i logged so far, without the logger prefix: "epoch 1/3: loss=..."."""
        return [m.group(1) for line in self.stderr(i).splitlines() if (m := _EPOCH_LINE.match(line))]

    def __enter__(self) -> LocalWorkers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
