"""Runs one untrusted program inside the sandbox process (started by tasks.backends.sandbox, never imported by the
workbench). Standard library only: it runs as `python -I -S` in a fresh process.

argv: RESULT_FD LIMITS_JSON; stdin: the program. The outcome goes to RESULT_FD as one JSON object:
{"kind": passed | syntax_error | assertion | memory | forbidden | crash, "detail": str, "network": str}.

Layers, outermost first: the parent's wall-clock timeout and process-group kill; an empty network namespace
(unprivileged user namespace) where the kernel allows it; resource limits (CPU seconds, address space, file size,
no core files); an audit hook (PEP 578) that refuses sockets, subprocesses, fork/exec/kill, ctypes, and any write,
delete or rename outside the working directory. It guards against the accidents of model-written code (loops, memory
bombs, stray deletes, network calls); it is not a boundary against a determined attacker: run untrusted models'
code on a machine you can lose, as the README says."""

import json
import os
import resource
import sys

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
           "os.kill", "os.killpg", "os.setuid", "os.setgid", "ctypes.", "_posixsubprocess", "pty.", "webbrowser.",
           "sys.addaudithook", "os.startfile", "urllib.Request", "ftplib.", "smtplib.", "telnetlib.", "http.client.")
PATH_EVENTS = ("os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod", "os.chown", "os.link", "os.symlink",
               "os.mkdir", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.chflags", "os.setxattr",
               "os.removexattr")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class Forbidden(PermissionError):
    """A call the sandbox refuses; the outcome's kind is 'forbidden'."""


def isolate_network() -> str:
    """An empty network namespace (only a down loopback) for this process and its children, when permitted."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0
        how = "namespace" if done else f"sockets blocked (no network namespace: {os.strerror(ctypes.get_errno())})"
    except (OSError, AttributeError) as err:
        how = f"sockets blocked (no network namespace: {err})"
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.")]:
        del sys.modules[name]  # the program's own `import ctypes` runs again, and its dlopen is refused
    return how


def limit(limits: dict) -> None:
    cpu = int(limits["cpu_s"])
    for what, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (limits["memory_bytes"],) * 2),
                        (resource.RLIMIT_FSIZE, (limits["file_bytes"],) * 2), (resource.RLIMIT_CORE, (0, 0))):
        resource.setrlimit(what, value)


def guard(workdir: str) -> None:
    """The audit hook: once added it cannot be removed, and it sees every audited call of the program."""
    root = os.path.realpath(workdir)

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor
        real = os.path.realpath(os.fsdecode(path))
        return real == root or real.startswith(root + os.sep)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                     (isinstance(flags, int) and flags & WRITE_FLAGS)
            if writes and not inside(path):
                raise Forbidden(f"sandbox: writing {os.fsdecode(path)!r} outside the working directory is not allowed")
        elif event.startswith(BLOCKED):
            raise Forbidden(f"sandbox: {event} is not allowed")
        elif event.startswith(PATH_EVENTS):
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise Forbidden(f"sandbox: {event} on {os.fsdecode(arg)!r} outside the working directory")

    sys.addaudithook(hook)


def outcome(program: str) -> dict:
    try:
        code = compile(program, "<solution>", "exec")
    except (SyntaxError, ValueError) as err:  # IndentationError is a SyntaxError; ValueError: null bytes
        return {"kind": "syntax_error", "detail": f"{type(err).__name__}: {err}"}
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except AssertionError as err:
        return {"kind": "assertion", "detail": f"AssertionError: {err}"[:300]}
    except MemoryError:
        return {"kind": "memory", "detail": "MemoryError: the memory limit was reached"}
    except Forbidden as err:
        return {"kind": "forbidden", "detail": str(err)[:300]}
    except SystemExit as err:
        return {"kind": "crash", "detail": f"SystemExit({err.code!r}) before the tests finished"}
    except BaseException as err:  # noqa: BLE001 - every failure of untrusted code is an outcome
        return {"kind": "crash", "detail": f"{type(err).__name__}: {err}"[:300]}
    return {"kind": "passed", "detail": ""}


def main() -> None:
    fd, limits = int(sys.argv[1]), json.loads(sys.argv[2])
    program = sys.stdin.read()
    sys.stdin.close()
    result_pipe = os.fdopen(fd, "w")
    network = isolate_network()
    limit(limits)
    guard(os.getcwd())
    del sys.argv[1:]
    result = outcome(program)
    result["network"] = network
    try:
        result_pipe.write(json.dumps(result))
        result_pipe.close()
    except Exception:  # noqa: BLE001 - the program closed or filled the pipe: the parent reports a crash
        pass
    os._exit(0)  # skip interpreter teardown: objects the program left behind cannot change the outcome


if __name__ == "__main__":
    main()
