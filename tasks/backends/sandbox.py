"""Execute untrusted programs (model-written code, and a benchmark's tests) isolated from the workbench.

Each program runs as two fresh processes (tasks/backends/sandbox_runner.py under `python -I -S`), each in its own
empty working directory:

- the **solution** process runs the untrusted code (prompt + completion) and answers calls of its functions;
- the **driver** process runs the problem's trusted context and its tests, the tested function being a proxy into
  the solution process, and reports the outcome.

This process relays every frame between them and takes the outcome only from the driver, so nothing the untrusted
code writes, and no way it exits, can make a failing test pass: it can only return values. The executor decides the
isolation of both processes (`Limits.executor`):

- `bwrap` (default where bubblewrap is installed): new PID, mount, network, IPC and UTS namespaces; a read-only view
  of /usr and the Python installation only (no /etc, /home, /root or project files), the working directory the one
  writable place; a seccomp filter refusing ptrace, pidfd, mount, namespaces, bpf, keyrings, io_uring and the like
  (x86_64); run as user nobody (65534) with no new privileges when this process is root; the whole namespace
  killed at the timeout.
- `container`: the command in $CURATE_SANDBOX_CONTAINER (a `docker run -i ...`/`podman run -i ...` line with
  {work}, {sandbox}, {name} and {memory_mb} placeholders: mount {sandbox} read-only at /sandbox, {work} at the
  working directory), e.g. for machines without bubblewrap.
- `process`: plain processes with the second layer only — weaker, for machines with neither; chosen explicitly.

Second layer in every executor: CPU-time, address-space and file-size limits, and an audit hook refusing sockets,
subprocesses, signals, ctypes and writes outside the working directory (clear 'forbidden' outcomes).

Outcome kinds: passed, syntax_error, assertion, timeout, memory, forbidden, crash."""

import json
import os
import queue
import selectors
import shutil
import struct
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.backends import sandbox_exec
from tasks.core.codeconvert import OUTCOMES as KINDS
from tasks.errors import SandboxUnavailable

EXECUTORS = ("auto", "bwrap", "container", "process")
START_S = 1.0  # two interpreters' start-up (~0.1 s each here), on top of the program's own timeout
MAX_FRAME = 32 << 20
MAX_BACKLOG = 64 << 20  # bytes from the solution queued for the tests (two largest frames): bounds this process's memory


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0  # wall clock, the whole program (imports and tests)
    memory_mb: int = 512  # address space, per process
    file_size_mb: int = 16  # largest file the program may write (in its working directory)
    executor: str = "auto"  # auto | bwrap | container | process
    audit_hook: bool = True  # the second layer; off only to test that the executor's boundary holds on its own

    def runner_args(self) -> dict:
        # CPU seconds past the wall-clock deadline: a busy loop ends as 'timeout', killed with its namespace
        return {"cpu_s": int(self.timeout_s + 0.999) + 2, "memory_bytes": self.memory_mb << 20,
                "file_bytes": self.file_size_mb << 20, "audit_hook": self.audit_hook}


@dataclass(frozen=True)
class Program:
    """What runs: the untrusted solution module, and the tests (with the problem's trusted context) that judge it."""
    solution: str
    tests: str = ""  # empty: the solution passes when it runs to its end
    context: str = ""  # the prompt as given (imports, helpers, classes): the tests see these, not the solution's
    entry_point: str = ""  # the tested function


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


def executor_name(requested: str = "auto") -> str:
    """The executor that will run: 'auto' is bwrap where it is installed; SandboxUnavailable says what to install."""
    requested = os.environ.get("CURATE_SANDBOX") or requested
    if requested not in EXECUTORS:
        raise SandboxUnavailable(f"unknown sandbox executor '{requested}'; executors: {', '.join(EXECUTORS)}")
    if requested in ("auto", "bwrap") and shutil.which("bwrap"):
        return "bwrap"
    if requested == "container" and not os.environ.get("CURATE_SANDBOX_CONTAINER"):
        raise SandboxUnavailable("executor 'container' needs $CURATE_SANDBOX_CONTAINER, a `docker run -i ...` line "
                                 "(docs/tasks.md, 'Code studies')")
    if requested in ("auto", "bwrap"):
        raise SandboxUnavailable("running generated code needs bubblewrap for isolation, and `bwrap` is not "
                                 "installed: `apt-get install bubblewrap` (Debian/Ubuntu), or set execution.executor: "
                                 "container (with $CURATE_SANDBOX_CONTAINER), or execution.executor: process to accept "
                                 "plain processes with limits and an audit hook only (weaker; docs/tasks.md, 'Code studies')")
    return requested


def execute(program: "Program | str", limits: Limits = Limits()) -> Outcome:
    """Run one program isolated; every failure of the program is an Outcome, never an exception."""
    job = program if isinstance(program, Program) else Program(program)
    name = executor_name(limits.executor)
    with tempfile.TemporaryDirectory(prefix="curate-exec-") as tmp:
        sides = {role: sandbox_exec.start(name, role, Path(tmp) / role, limits) for role in ("solution", "driver")}
        try:
            base = {"limits": limits.runner_args(), "isolate_network": name == "process"}
            result = _relay(sides, {**base, "source": job.solution},
                            {**base, "tests": job.tests, "context": job.context, "entry_point": job.entry_point},
                            time.monotonic() + limits.timeout_s + START_S)
        finally:
            for side in sides.values():
                side.kill()
        if result is not None and result.get("ended"):
            result["detail"] += f" ({sides['driver'].last_error() or 'no message'})"
    if result is None:
        return Outcome("timeout", f"killed after {limits.timeout_s:g} s (wall clock)", sides["driver"].network)
    kind = result.get("kind") if result.get("kind") in KINDS else "crash"
    network = sides["driver"].network or str(result.get("network", ""))
    return Outcome(kind, str(result.get("detail", ""))[:300], network)


def _frame(message: dict) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">I", len(data)) + data


class _Writer(queue.Queue):
    """A thread writing queued bytes to a child's stdin, so a child that stops reading never blocks this one;
    `backlog` is what is queued and not yet written."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd, self.backlog = fd, 0
        threading.Thread(target=self._run, daemon=True).start()

    def put(self, chunk: "bytes | None") -> None:  # type: ignore[override]
        self.backlog += len(chunk or b"")
        super().put(chunk)

    def _run(self) -> None:
        try:
            while (chunk := self.get()) is not None:
                size = len(chunk)
                while chunk:
                    chunk = chunk[os.write(self.fd, chunk):]
                self.backlog -= size
        except OSError:
            pass  # the child is gone
        finally:
            os.close(self.fd)


def _relay(sides: dict, solution_job: dict, driver_job: dict, deadline: float) -> "dict | None":
    """Pass the solution's bytes to the driver and the driver's calls to the solution until the driver reports
    its result (returned), or the deadline (None)."""
    to_solution, to_driver = (_Writer(sides[r].stdin) for r in ("solution", "driver"))
    to_solution.put(_frame(solution_job))
    to_driver.put(_frame(driver_job))
    selector = selectors.DefaultSelector()
    for role in ("solution", "driver"):
        os.set_blocking(sides[role].stdout, False)
        selector.register(sides[role].stdout, selectors.EVENT_READ, role)
    from_driver = b""
    try:
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:  # that side closed its output: it exited
                    selector.unregister(key.fd)
                    if key.data == "driver":
                        return {"kind": "crash", "detail": "the test driver ended without a result", "ended": True}
                    to_driver.put(None)  # the driver then sees the solution gone
                elif key.data == "solution":
                    to_driver.put(chunk)
                    if to_driver.backlog > MAX_BACKLOG:  # more than the tests take in: it cannot be a reply
                        selector.unregister(key.fd)
                        to_driver.put(None)  # the driver then sees the solution gone
                else:
                    from_driver += chunk
                    while len(from_driver) >= 4:
                        size = struct.unpack(">I", from_driver[:4])[0]
                        if size > MAX_FRAME:
                            return {"kind": "crash", "detail": f"the test driver sent a frame of {size} bytes"}
                        if len(from_driver) < 4 + size:
                            break
                        frame, from_driver = from_driver[4:4 + size], from_driver[4 + size:]
                        try:  # the driver runs the benchmark's tests: its frames are checked too
                            message = json.loads(frame)
                            if "result" in message:
                                return message["result"] if isinstance(message["result"], dict) else {}
                            to_solution.put(_frame(message["msg"]))
                        except (ValueError, KeyError, TypeError):
                            return {"kind": "crash", "detail": "the test driver sent something that is not a frame"}
        return None
    finally:
        selector.close()
        to_solution.put(None)
        to_driver.put(None)


def execute_many(programs: "list[Program | str]", limits: Limits = Limits(), parallel: int = 2) -> list[Outcome]:
    """execute() for each program, `parallel` programs at a time, results in the programs' order."""
    if not programs:
        return []
    executor_name(limits.executor)  # a missing executor is one clear error, not one per program
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        return list(pool.map(lambda p: execute(p, limits), programs))


def run_problems(programs: list[dict], execution: dict) -> list[Outcome]:
    """Programs given as dicts (tasks.core.codeconvert.program) under a study's execution settings (a task type's
    context['execution']): how the code task type reaches the sandbox, which its caller hands it."""
    limits = Limits(timeout_s=execution["timeout_s"], memory_mb=execution["memory_mb"],
                    executor=execution.get("executor", "auto"))
    executor_name(limits.executor)  # SandboxUnavailable before anything runs
    return execute_many([Program(**p) for p in programs], limits, execution["parallel"])
