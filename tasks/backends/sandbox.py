"""Execute untrusted programs (model-written code + its tests) in a sandbox: one fresh process per program, never
the workbench's own. The process runs tasks/core/sandbox_runner.py under `python -I -S` in a temporary working
directory (removed afterwards) with a clean environment, its own process group and session, and:

- a wall-clock timeout (the whole process group is killed: kind 'timeout'),
- CPU-time, address-space and file-size limits (`resource`), no core files,
- no network: an empty network namespace where the kernel allows unprivileged user namespaces, and sockets refused
  by an audit hook everywhere,
- subprocesses, fork/exec, kill, ctypes, and writes/deletes outside the working directory refused by the same hook.

Outcome kinds: passed, syntax_error, assertion, timeout, memory, forbidden, crash."""

import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
KINDS = ("passed", "syntax_error", "assertion", "timeout", "memory", "forbidden", "crash")


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0  # wall clock, the whole program (imports and tests)
    memory_mb: int = 512  # address space
    file_size_mb: int = 16  # largest file the program may write (in its working directory)

    def runner_args(self) -> dict:
        return {"cpu_s": max(1, int(self.timeout_s + 0.999)), "memory_bytes": self.memory_mb << 20,
                "file_bytes": self.file_size_mb << 20}


@dataclass(frozen=True)
class Outcome:
    kind: str
    detail: str = ""
    network: str = ""  # how the network was cut: 'namespace' or 'sockets blocked (...)'

    @property
    def passed(self) -> bool:
        return self.kind == "passed"

    def as_dict(self) -> dict:
        return asdict(self)


def execute(program: str, limits: Limits = Limits()) -> Outcome:
    """Run one program in a fresh sandboxed process; every failure of the program is an Outcome, never an exception."""
    with tempfile.TemporaryDirectory(prefix="curate-exec-") as work, \
            open(Path(work) / ".stderr", "w+b") as errors:  # a file, not a pipe: bounded by the file-size limit
        read_end, write_end = os.pipe()
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", str(RUNNER), str(write_end),
                                     json.dumps(limits.runner_args())], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=errors, cwd=work, env=env,
                                    pass_fds=(write_end,), start_new_session=True)
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as result_pipe:
            try:
                proc.communicate(program.encode(), timeout=limits.timeout_s + 1.0)  # + the interpreter's start
            except subprocess.TimeoutExpired:
                return Outcome("timeout", f"killed after {limits.timeout_s:g} s (wall clock)")
            finally:
                _kill(proc)  # the program, or anything it left in its process group
            raw = result_pipe.read()
        errors.seek(max(0, errors.seek(0, os.SEEK_END) - 2000))
        stderr = errors.read().decode(errors="replace").strip().splitlines()[-1:]
    try:
        found = json.loads(raw)
        return Outcome(found["kind"] if found.get("kind") in KINDS else "crash", found.get("detail", ""),
                       found.get("network", ""))
    except (ValueError, AttributeError, TypeError):
        pass  # no outcome from the runner (killed, or the program broke the pipe): judged by exit status below
    code = proc.returncode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        kind = "timeout" if -code == signal.SIGXCPU else "crash"
        return Outcome(kind, f"killed by {name}" + (" (CPU-time limit)" if -code == signal.SIGXCPU else ""))
    memory = any("memory" in line.lower() for line in stderr)
    return Outcome("memory" if memory else "crash", f"exit {code}" + (f": {stderr[0][:200]}" if stderr else ""))


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already
    proc.wait()


def execute_many(programs: list[str], limits: Limits = Limits(), parallel: int = 2) -> list[Outcome]:
    """execute() for each program, `parallel` sandbox processes at a time, results in the programs' order."""
    if not programs:
        return []
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        return list(pool.map(lambda p: execute(p, limits), programs))
