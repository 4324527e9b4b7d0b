"""The sandbox that runs generated code must hold: an infinite loop is killed at the timeout, a memory bomb hits the
limit, writing outside the work dir fails, opening a socket fails, os.system/subprocess and other dangerous calls are
blocked — and the parent process survives all of them."""

import os
import socket

import pytest

from tasks.backends import sandbox

LIMITS = sandbox.Limits(timeout_s=2, memory_mb=256)


def test_an_infinite_loop_is_killed_at_the_timeout():
    assert sandbox.execute("while True:\n    pass\n", LIMITS).kind == "timeout"
    assert sandbox.execute("import time\ntime.sleep(60)\n", LIMITS).kind == "timeout"  # wall clock, no CPU used


def test_a_memory_bomb_hits_the_limit():
    assert sandbox.execute("x = [0] * (10 ** 10)\n", LIMITS).kind == "memory"
    assert sandbox.execute("x = []\nwhile True:\n    x.append(' ' * 10 ** 6)\n", LIMITS).kind == "memory"


def test_writing_outside_the_work_dir_fails(tmp_path):
    target = tmp_path / "escaped.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')\n",
                    f"import os\nos.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)\n",
                    f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
                    f"import os\nos.chdir({str(tmp_path)!r})\nopen('escaped.txt', 'w')\n"):
        out = sandbox.execute(program, LIMITS)
        assert out.kind == "forbidden" and "outside the working directory" in out.detail, program
    assert not target.exists()
    (tmp_path / "keep.txt").write_text("mine")
    assert sandbox.execute(f"import os\nos.remove({str(tmp_path / 'keep.txt')!r})\n", LIMITS).kind == "forbidden"
    assert (tmp_path / "keep.txt").read_text() == "mine"
    inside = "open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n"
    assert sandbox.execute(inside, LIMITS).passed  # its own temporary working directory is writable


def test_opening_a_socket_fails():
    with socket.socket() as server:  # a port on this machine the program would reach without the sandbox
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        out = sandbox.execute(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n", LIMITS)
    assert out.kind == "forbidden" and "socket" in out.detail
    assert out.network == "namespace" or out.network.startswith("sockets blocked")


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
