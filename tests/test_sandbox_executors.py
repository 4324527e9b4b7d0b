"""The sandbox's plumbing: values crossing between the solution and its tests, the seccomp program, and each
executor (a missing one is a clear error; the container path runs a command line of the same shape; the weaker
process executor keeps the second layer). The hostile attempts are in test_sandbox.py."""

import shutil
import sys

import pytest

from tasks.backends import sandbox, sandbox_exec
from test_sandbox import FAILING, LIMITS, judged


def test_the_seccomp_filter_is_well_formed():
    prog = sandbox_exec.seccomp_filter()
    assert len(prog) % 8 == 0 and len(prog) // 8 == len(sandbox_exec.DENIED) + 10


def test_a_missing_executor_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CURATE_SANDBOX", raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.execute_many(["assert True\n"], LIMITS)
    with pytest.raises(sandbox.SandboxUnavailable, match="unknown sandbox executor 'vm'; executors: auto, bwrap"):
        sandbox.execute("assert True\n", sandbox.Limits(executor="vm"))
    monkeypatch.delenv("CURATE_SANDBOX_CONTAINER", raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match="CURATE_SANDBOX_CONTAINER"):
        sandbox.execute("assert True\n", sandbox.Limits(executor="container"))


def test_the_process_executor_keeps_the_second_layer():
    weak = sandbox.Limits(timeout_s=2, memory_mb=256, executor="process")
    assert sandbox.execute("import os\nos.system('true')\n", weak).kind == "forbidden"
    assert judged(FAILING + "import os\nos._exit(0)\n", weak).kind != "passed"
    assert judged("def add(a, b):\n    return a + b\n", weak).passed
    assert sandbox.execute("while True:\n    pass\n", weak).kind == "timeout"


def test_the_container_executor_runs_its_command_line(monkeypatch, tmp_path):
    """No container engine runs here; a command line in the same shape (placeholders filled, stdin/stdout as the
    channel, the kill command on the way out) exercises the container code path."""
    log = tmp_path / "killed"
    fake = tmp_path / "engine"
    fake.write_text(f"#!{sys.executable}\nimport os, sys\na = sys.argv[1:]\nif a[0] == 'kill':\n"
                    f"    open({str(log)!r}, 'a').write(a[1] + '\\n')\n    sys.exit(0)\nos.chdir(a[2])\n"
                    "os.execv(sys.executable, [sys.executable] + a[a.index('--') + 2:])\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CURATE_SANDBOX_CONTAINER", f"{fake} run --name={{name}} {{work}} --memory={{memory_mb}}m "
                                                   "-v {sandbox}:/sandbox:ro --")
    monkeypatch.setattr(sandbox_exec, "CONTAINER_RUNNER", str(sandbox_exec.kit() / "sandbox_runner.py"))
    ctr = sandbox.Limits(timeout_s=2, memory_mb=256, executor="container")
    assert judged("def add(a, b):\n    return a + b\n", ctr).passed
    assert judged(FAILING, ctr).kind == "assertion"
    assert len(log.read_text().split()) == 4 and all(n.startswith("curate-exec-") for n in log.read_text().split())


def test_values_cross_between_the_solution_and_its_tests():
    module = ("def f(x, t=None):\n    x.append(len(x)) if isinstance(x, list) else None\n    return x, t, {1, 2}, "
              "(i for i in range(3)), b'\\x00', 1.5 + 2j, float('inf'), {(1, 2): [None]}\n")
    tests = ("v = [7]\nr = f(v, int)\nassert v == [7, 1]  # the solution changed the caller's list, as in one process\n"
             "assert r[0] == [7, 1] and r[1] is int and r[2] == {1, 2} and list(r[3]) == [0, 1, 2]\n"
             "assert r[4:] == (b'\\x00', 1.5 + 2j, float('inf'), {(1, 2): [None]})\n")
    assert sandbox.execute(sandbox.Program(module, tests, "", "f"), LIMITS).passed
    raising = sandbox.Program("def f(x):\n    raise KeyError(x)\n", "try:\n    f(1)\nexcept KeyError:\n    pass\n", "", "f")
    assert sandbox.execute(raising, LIMITS).passed  # the solution's exception reaches the tests as its own type


def test_a_code_benchmark_without_its_executor_is_refused_before_compute(monkeypatch):
    from tasks import tasktypes

    monkeypatch.delenv("CURATE_SANDBOX", raising=False)
    monkeypatch.delenv("CURATE_SANDBOX_CONTAINER", raising=False)
    rows = [{"id": "p1", "prompt": "def f():\n", "solution": "    return 1\n", "test": "assert f() == 1\n",
             "entry_point": "f"}]
    context = {"execution": {"allowed": True, "timeout_s": 5, "memory_mb": 256, "parallel": 1,
                             "reference_failures": "refuse", "executor": "container"}}
    _, problems = tasktypes.get("code").check(rows, context, "benchmark", execute=sandbox.run_problems)
    assert problems and problems[0].startswith("benchmark: executor 'container' needs $CURATE_SANDBOX_CONTAINER")
    _, problems = tasktypes.get("code").check(rows, {"execution": {**context["execution"], "executor": "process"}},
                                              "benchmark", execute=sandbox.run_problems)
    assert problems == []  # the reference ran and passed


def test_tests_that_write_garbage_to_the_channel_are_a_crash_not_an_exception():
    tests = ("import os\nfor fd in range(3, 8):\n    try:\n        os.write(fd, b'\\x00\\x00\\x00\\x05hello')\n"
             "    except OSError:\n        pass\nimport time\ntime.sleep(1)\n")
    out = sandbox.execute(sandbox.Program("def add(a, b):\n    return a + b\n", tests, "", "add"), LIMITS)
    assert out.kind == "crash" and "not a frame" in out.detail


def test_the_process_executor_reports_how_the_network_was_cut():
    weak = sandbox.Limits(timeout_s=2, memory_mb=256, executor="process")
    out = sandbox.execute("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n", weak)
    assert out.kind == "forbidden" and (out.network == "namespace" or out.network.startswith("sockets blocked"))
