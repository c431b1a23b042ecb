"""Keep TensorFlow's start-up lines out of notebook outputs while every other line of native stderr shows.

TensorFlow 2.21 writes its start-up notices from C++ straight to file descriptor 2, several of them
while its shared libraries load and before any setting it reads can silence them: absl's banner, the
oneDNN notice, "could not find cuda drivers", "failed call to cuInit" and the CPU-feature notice.
``TF_CPP_MIN_LOG_LEVEL`` hides the CPU-feature notice from 1 up and the cuInit error only at 3, which
hides every native error too; ``TF_ENABLE_ONEDNN_OPTS=0`` would change the arithmetic being measured;
absl's and gRPC's variables change none of them. So the kernel's descriptor 2 is passed through a line
filter that drops exactly these lines, and the converter's notices that a reader cannot act on
(:data:`CONVERSION_NOISE`). Python's warnings do not use descriptor 2 in a kernel.
A command (``sprint2 train ...``, :func:`filter_process_stderr`) filters in a forked child instead of a
thread, so the lines a crashing process writes last still arrive, and Python's own stderr bypasses the
filter. Standard library only: this runs before TensorFlow is imported.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import signal
import sys
import threading
import time
from typing import NoReturn

logger = logging.getLogger(__name__)

#: The start-up notices, one pattern per line; C++ log lines read ``I0000 00:00:17.9 25529 port.cc:153] ...``
STARTUP_NOISE: tuple[re.Pattern[str], ...] = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^[IW]\d{4} [\d:.]+\s+\d+ port\.cc:\d+\] oneDNN custom operations are on"),
    re.compile(r"^[IW]\d{4} [\d:.]+\s+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"),
    re.compile(r"^E\d{4} [\d:.]+\s+\d+ cuda_(platform|executor)\.cc:\d+\] failed call to cuInit: "),
    re.compile(r"^[IW]\d{4} [\d:.]+\s+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"),
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler"),
)

#: Notices of the TFLite converter and LiteRT that say nothing a reader can act on: a converter print,
#: a graph attribute the converter ignores (it says so), the CPU delegate LiteRT always creates.
CONVERSION_NOISE: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$"
    ),
    re.compile(
        r"^E\d{4} [\d:.]+\s+\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute Truncate which is not in"
    ),
    re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"),
)

#: A partial line waits this long for its end before it is written as it is (prompts, progress bars).
PARTIAL_LINE_WAIT_S = 0.2
#: At exit a command waits at most this long for the filter process to write the lines it still holds.
EXIT_WAIT_S = 2.0

_lock = threading.Lock()
_installed_fd: int | None = None
_filter_pid: int | None = None


def is_notice(line: str) -> bool:
    """Whether one line of stderr (without its newline) is a start-up or conversion notice."""
    return any(pattern.search(line) for pattern in STARTUP_NOISE + CONVERSION_NOISE)


def filter_native_stderr(fd: int = 2) -> bool:
    """Route descriptor ``fd`` through a thread that drops the start-up notices; once per process.

    Returns True when the filter is in place (installed now or before), False when ``fd`` cannot be
    redirected (closed, not a descriptor).
    """
    global _installed_fd
    with _lock:
        if _installed_fd == fd:
            return True
        try:
            target = os.dup(fd)
        except OSError as exc:
            logger.debug("descriptor %d not filtered: %s", fd, exc)
            return False
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        threading.Thread(
            target=_pump, args=(read_end, target), name="sprint2-stderr-filter", daemon=True
        ).start()
        _installed_fd = fd
        return True


def filter_process_stderr() -> bool:
    """Drop the start-up notices from this process's descriptor 2 in a forked filter process; once.

    For a command-line process, called before TensorFlow is imported. Native writers (TensorFlow's C++,
    child processes) write to descriptor 2, which becomes a pipe to the filter; the filter is a process,
    not a thread, so it still writes the last lines of a process that aborts. ``sys.stderr`` is reopened
    on the original stderr, so Python's logging, warnings, tracebacks and progress bars bypass the
    filter: they are written at once and still see a terminal. At exit descriptor 2 is restored and the
    filter given :data:`EXIT_WAIT_S` to write what is left. Returns True when the filter is in place,
    False where it cannot be (no ``os.fork``, descriptor 2 closed).
    """
    global _filter_pid
    with _lock:
        if _filter_pid is not None:
            return True
        if not hasattr(os, "fork"):
            return False
        try:
            target = os.dup(2)
        except OSError as exc:
            logger.debug("descriptor 2 not filtered: %s", exc)
            return False
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
            stream.flush()
        pid = os.fork()
        if pid == 0:
            _run_filter(read_end, write_end, target)
        os.close(read_end)
        os.dup2(write_end, 2)
        os.close(write_end)
        _filter_pid = pid
        sys.stderr = os.fdopen(
            target,
            "w",
            buffering=1,
            encoding=getattr(sys.stderr, "encoding", None),
            errors="backslashreplace",
        )
        atexit.register(_end_filter, os.getpid(), pid, target)
        return True


def _run_filter(read_end: int, write_end: int, target: int) -> NoReturn:
    """The forked filter: pump until every writer has closed the pipe, then leave without clean-up."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the command; its last lines still pass
        os.close(write_end)
        os.closerange(0, 2)  # stdin and stdout stay the command's alone (a pipe reader sees its end)
        _pump(read_end, target)
    finally:
        os._exit(0)


def _end_filter(owner: int, pid: int, target: int) -> None:
    """At exit: descriptor 2 back on the original stderr, then wait for the filter to write what it holds.

    Child processes that still hold the pipe keep the filter alive; it ends on its own after them.
    """
    if os.getpid() != owner:  # a forked child that exits normally must not touch the filter
        return
    sys.stderr.flush()
    os.dup2(target, 2)  # closes this process's end of the pipe
    deadline = time.monotonic() + EXIT_WAIT_S
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # reaped already
            return
        time.sleep(0.01)


def _pump(read_end: int, target: int) -> None:
    """Copy lines from ``read_end`` to ``target`` without the start-up notices, until end of file.

    Reading goes on when ``target`` has closed (the kernel shutting down), so writers never block.
    """
    pending = b""
    out: int | None = target
    while True:
        ready, _, _ = select.select([read_end], [], [], PARTIAL_LINE_WAIT_S if pending else None)
        if not ready:  # a partial line that did not end in time: written as it is
            out, pending = _write(out, pending), b""
            continue
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = [line for line in lines if not is_notice(line.decode("utf-8", "replace"))]
        if kept:
            out = _write(out, b"\n".join(kept) + b"\n")
    _write(out, pending)
    os.close(read_end)


def _write(target: int | None, data: bytes) -> int | None:
    """Write all of ``data`` to descriptor ``target``; None from then on once ``target`` is gone."""
    if target is None:
        return None
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(target, view) :]
    except OSError:
        return None
    return target
