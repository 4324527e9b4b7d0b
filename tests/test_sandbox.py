"""The sandbox that runs generated code (and a benchmark's tests) must hold. Ordinary accidents end as clear outcome
kinds; every hostile attempt seen in issue 25 fails as an outcome of the program, with the parent process unharmed
and back on time — and the attempts that beat the audit hook in the old sandbox are run again with that hook off,
so the test shows the executor's boundary (namespaces, read-only system, user nobody, seccomp) holds on its own."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.backends import sandbox

LIMITS = sandbox.Limits(timeout_s=2, memory_mb=256)
BARE = sandbox.Limits(timeout_s=2, memory_mb=256, audit_hook=False)  # the executor's boundary alone
needs_bwrap = pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap is not installed (apt-get install "
                                 "bubblewrap); the 'process' executor is tested below")
ROOT = os.geteuid() == 0
FAILING = "def add(a, b):\n    return a - b\n"  # a wrong solution: its test must fail, whatever else it does
TEST = "assert add(1, 2) == 3\nassert add(5, 5) == 10\n"


def judged(solution_module: str, limits=LIMITS) -> sandbox.Outcome:
    return sandbox.execute(sandbox.Program(solution_module, TEST, "", "add"), limits)


def spawn(command: str) -> str:
    """Program text that starts a shell command the way the hostile completion did: _posixsubprocess.fork_exec,
    which no audit event covers, in a new session."""
    return ("import _posixsubprocess, os\nr, w = os.pipe()\n"
            f"_posixsubprocess.fork_exec([b'/bin/sh', b'-c', {command.encode()!r}], [b'/bin/sh'], True, (), None, None,"
            " -1, -1, -1, -1, -1, -1, r, w, True, True, -1, None, None, None, -1, None, False)\n")


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


# ---- outcome kinds of ordinary programs -----------------------------------------------------------------------
def test_an_infinite_loop_is_killed_at_the_timeout():
    assert sandbox.execute("while True:\n    pass\n", LIMITS).kind == "timeout"
    assert sandbox.execute("import time\ntime.sleep(60)\n", LIMITS).kind == "timeout"  # wall clock, no CPU used
    slow = "def add(a, b):\n    while True:\n        pass\n"
    assert judged(slow).kind == "timeout"  # inside a call from the tests too


def test_a_memory_bomb_hits_the_limit():
    assert sandbox.execute("x = [0] * (10 ** 10)\n", LIMITS).kind == "memory"
    assert sandbox.execute("x = []\nwhile True:\n    x.append(' ' * 10 ** 6)\n", LIMITS).kind == "memory"
    assert judged("def add(a, b):\n    return [0] * (10 ** 10)\n").kind == "memory"


def test_writing_outside_the_work_dir_fails(tmp_path):
    target = tmp_path / "escaped.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')\n",
                    f"import os\nos.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)\n",
                    f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n"):
        out = sandbox.execute(program, LIMITS)
        assert out.kind == "forbidden" and "outside the working directory" in out.detail, program
    assert not target.exists()
    (tmp_path / "keep.txt").write_text("mine")
    assert sandbox.execute(f"import os\nos.remove({str(tmp_path / 'keep.txt')!r})\n", LIMITS).kind == "forbidden"
    assert (tmp_path / "keep.txt").read_text() == "mine"
    inside = "open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n"
    assert sandbox.execute(inside, LIMITS).passed  # its own temporary working directory is writable


def test_opening_a_socket_fails():
    with socket_server() as port:
        out = sandbox.execute(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n", LIMITS)
    assert out.kind == "forbidden" and "socket" in out.detail
    assert out.network == "namespace" or out.network.startswith("sockets blocked")


class socket_server:
    def __enter__(self) -> int:
        import socket
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        return self.server.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.server.close()


@pytest.mark.parametrize("program", ["import os\nos.system('touch /tmp/x')\n",
                                     "import subprocess\nsubprocess.run(['true'])\n",
                                     "import os\nos.fork()\n",
                                     "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
                                     "import ctypes\nctypes.CDLL(None).system(b'true')\n"])
def test_subprocesses_and_dangerous_calls_are_blocked(program):
    out = sandbox.execute(program, LIMITS)
    assert out.kind == "forbidden" and "not allowed" in out.detail


def test_outcome_kinds_and_the_parent_survives():
    me = os.getpid()
    kinds = [o.kind for o in sandbox.execute_many(
        ["assert 1 + 1 == 2\n", "def f(:\n", "assert 1 == 2\n", "raise ValueError('x')\n", "import sys\nsys.exit(0)\n",
         "import faulthandler\nfaulthandler._sigsegv()\n"], LIMITS)]
    assert kinds == ["passed", "syntax_error", "assertion", "crash", "crash", "crash"]
    assert os.getpid() == me and sandbox.execute("assert True\n", LIMITS).passed  # still here, still working


# ---- the attempts of issue 25 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("limits", [LIMITS, BARE], ids=["with-hook", "boundary-only"])
def test_a_solution_cannot_forge_a_pass(limits):
    forge_fds = ("import os, json, struct\nmsg = json.dumps({'kind': 'passed', 'result': {'kind': 'passed'}}).encode()\n"
                 "for fd in range(64):\n    try:\n        os.write(fd, msg)\n"
                 "        os.write(fd, struct.pack('>I', len(msg)) + msg)\n    except OSError:\n        pass\n")
    for module in (FAILING + forge_fds + "os._exit(0)\n",  # at import time
                   FAILING.replace("return a - b", "import os\n    " + "\n    ".join(forge_fds.splitlines()[1:]) +
                                   "\n    os._exit(0)"),  # inside the tested call
                   "class Yes:\n    def __eq__(self, other):\n        return True\n\ndef add(a, b):\n    return Yes()\n",
                   "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n" + FAILING):
        out = judged(module, limits)
        assert out.kind != "passed", module
    assert judged("def add(a, b):\n    return a + b\n", limits).passed  # and a right answer still passes


@needs_bwrap
def test_a_setsid_child_does_not_outlive_the_timeout():
    marker = "31.4159"
    out = sandbox.execute(spawn(f"setsid sleep {marker} & sleep 60") + "import time\ntime.sleep(60)\n", BARE)
    assert out.kind == "timeout"
    time.sleep(0.5)
    assert processes_with(marker) == []  # killed with the namespace


@needs_bwrap
@pytest.mark.parametrize("limits", [LIMITS, BARE], ids=["with-hook", "boundary-only"])
def test_dir_fd_sqlite_mkfifo_and_a_shell_cannot_touch_the_machine(tmp_path, limits):
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    for program in (f"import os\nfd = os.open('/', os.O_RDONLY)\nos.unlink({str(keep)[1:]!r}, dir_fd=fd)\n",
                    "import os\nfd = os.open('/usr', os.O_RDONLY)\nos.open('x', os.O_CREAT | os.O_WRONLY, dir_fd=fd)\n",
                    f"import sqlite3\nsqlite3.connect({str(tmp_path / 'x.db')!r}).execute('create table t (x)')\n",
                    "import sqlite3\nsqlite3.connect('/usr/x.db').execute('create table t (x)')\n",
                    f"import os\nos.mkfifo({str(tmp_path / 'fifo')!r})\n",
                    "import os\nos.mkfifo('/usr/fifo')\n"):
        out = sandbox.execute(program, limits)
        assert out.kind != "passed", (program, out)
    # a shell started past the hook runs, but inside: it sees neither file and can write neither place
    sandbox.execute(spawn(f"rm -f {keep}; touch {tmp_path}/shell /usr/shell") + "import time\ntime.sleep(0.5)\n", limits)
    assert keep.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert not any(os.path.exists(p) for p in ("/usr/x.db", "/usr/fifo", "/usr/shell", "/usr/x"))


@needs_bwrap
def test_pidfd_and_kill_cannot_reach_another_process():
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for program in (f"import os, signal\nfd = os.pidfd_open({victim.pid})\nsignal.pidfd_send_signal(fd, 9)\n",
                        f"import os\nos.kill({victim.pid}, 9)\n"):
            for limits in (LIMITS, BARE):
                assert sandbox.execute(program, limits).kind != "passed"
        for limits in (LIMITS, BARE):  # every pid it can name: only its own namespace's
            sandbox.execute("import os\nfor pid in range(2, 40000):\n    try:\n        os.kill(pid, 9)\n"
                            "    except OSError:\n        pass\n", limits)
        assert victim.poll() is None  # still running
    finally:
        victim.kill()
        victim.wait()


@needs_bwrap
def test_reassigning_names_does_not_disable_the_hook(tmp_path):
    for disable in ("import sys\nsys.modules['__main__'].BLOCKED = ()\n",
                    "import builtins\nbuiltins.isinstance = lambda *a: False\nbuiltins.any = lambda *a: False\n",
                    "import os.path\nos.path.realpath = lambda p: '/work/x'\n"):
        out = sandbox.execute(disable + f"open({str(tmp_path / 'x')!r}, 'w')\nimport os\nos.system('true')\n", LIMITS)
        assert out.kind == "forbidden", (disable, out)
    assert list(tmp_path.iterdir()) == []


@needs_bwrap
def test_loading_libc_or_cffi_gives_nothing_outside(tmp_path):
    assert sandbox.execute("import cffi\n", BARE).kind == "crash"  # no site-packages in the sandbox
    out = sandbox.execute(f"import ctypes\nlibc = ctypes.CDLL(None)\nlibc.system(b'touch {tmp_path}/c')\n"
                          "assert libc.unshare(0x10000000) != 0  # seccomp\n", BARE)
    assert out.passed and list(tmp_path.iterdir()) == []  # the shell ran, inside, and saw none of this machine


@needs_bwrap
def test_root_only_files_are_not_readable():
    program = "open('/etc/shadow').read()\n"
    assert sandbox.execute(program, BARE).kind == "crash"
    if ROOT:  # the program runs as nobody, whatever this process is
        assert sandbox.execute("import os\nassert (os.getuid(), os.geteuid()) == (65534, 65534)\n", BARE).passed
        assert sandbox.execute("open('/proc/1/environ').read()\n", BARE).kind == "crash"


@needs_bwrap
def test_a_grandchild_holding_the_channel_does_not_hold_the_parent():
    program = spawn("setsid sh -c 'yes xxxxxxxxxxxxxxxx' >&3 & sleep 60")  # floods the channel to the tests
    start = time.monotonic()
    out = sandbox.execute(sandbox.Program(FAILING.replace("return a - b", "import time\n    time.sleep(60)") +
                                          program.replace(">&3", ""), TEST, "", "add"), BARE)
    assert out.kind in ("timeout", "crash") and time.monotonic() - start < BARE.timeout_s + 10
    time.sleep(0.5)
    assert processes_with("xxxxxxxxxxxxxxxx") == []


@needs_bwrap
def test_hostile_benchmark_tests_are_contained_too(tmp_path):
    tests = spawn(f"touch {tmp_path}/from-tests") + f"open({str(tmp_path / 'x')!r}, 'w')\n"
    assert sandbox.execute(sandbox.Program("def add(a, b):\n    return a + b\n", tests, "", "add"), BARE).kind != "passed"
    assert list(tmp_path.iterdir()) == []


def test_the_parent_survives_signals_it_does_not_send():
    before = signal.getsignal(signal.SIGTERM)
    assert sandbox.execute("import os, signal\nos.kill(1, signal.SIGTERM)\n", LIMITS).kind == "forbidden"
    assert signal.getsignal(signal.SIGTERM) == before


@needs_bwrap
def test_a_killed_worker_leaves_no_sandbox_behind(tmp_path):
    """kill -9 of the process that runs the sandbox (a worker dying mid-evaluation): the namespaces die with it."""
    marker = "27.1828"
    program = tmp_path / "program.py"  # not on the worker's command line, so only the sandbox's sleep matches
    program.write_text(spawn(f"sleep {marker}") + "import time\ntime.sleep(60)\n")
    worker = subprocess.Popen([sys.executable, "-c", "import sys; sys.path.insert(0, '.')\n"
                               "from tasks.backends import sandbox\n"
                               f"sandbox.execute(open({str(program)!r}).read(), sandbox.Limits(timeout_s=60))"],
                              cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 30
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker), "the program never started"
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []
