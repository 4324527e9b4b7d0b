"""Runs inside the sandbox (started by tasks.backends.sandbox, never imported by the workbench). Standard library only:
it runs as `python -I -S` in a fresh, isolated process, in one of two roles:

- `solution`: executes the untrusted code (the prompt and the model's completion) and then answers calls: "call
  NAME with these arguments" -> the return value (or the exception), as data. It never sees the tests.
- `driver`: executes the problem's trusted context (the prompt alone) and its tests, with the tested function
  replaced by a proxy that calls into the solution's process. It decides the outcome and reports it.

The two processes never share a pipe: the trusted parent relays every frame, and accepts the outcome only from the
driver. Whatever the untrusted code writes, or however it exits, it can only return values or fail.

Frames: 4-byte big-endian length + JSON. Values cross as tagged JSON (`encode`/`decode`): only builtin data, and
instances of classes the receiving side defines itself, are ever rebuilt — never code.

Second layer, after the executor's namespaces: resource limits and an audit hook (PEP 578) refusing sockets,
subprocesses, signals, ctypes and writes outside the working directory, so common accidents get a clear
'forbidden' outcome. The boundary itself is the executor (docs/tasks.md, "Code studies")."""

import builtins
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder out of the path
from sandbox_values import decode, encode, receive, send  # noqa: E402  (its one helper module, mounted beside it)

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
           "os.kill", "os.killpg", "os.setuid", "os.setgid", "ctypes.", "_posixsubprocess", "pty.", "webbrowser.",
           "sys.addaudithook", "os.startfile", "urllib.Request", "ftplib.", "smtplib.", "telnetlib.", "http.client.")
PATH_EVENTS = ("os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod", "os.chown", "os.link", "os.symlink",
               "os.mkdir", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.chflags", "os.setxattr",
               "os.removexattr", "os.mkfifo", "os.mknod", "sqlite3.connect")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
KINDS = ("passed", "syntax_error", "assertion", "timeout", "memory", "forbidden", "crash")  # as sandbox.KINDS
EXCEPTIONS = {name: cls for name, cls in vars(builtins).items() if isinstance(cls, type) and issubclass(cls, Exception)}


class Forbidden(PermissionError):
    """A call the sandbox refuses; the outcome's kind is 'forbidden'."""


class SolutionGone(RuntimeError):
    """The solution's process ended (or sent something that is not a reply) during a call."""


# ---- the second layer: limits and the audit hook ---------------------------------------------------------------
def isolate_network() -> str:
    """An empty network namespace for this process (the 'process' executor only: the others have one already)."""
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
    """The audit hook: once added it cannot be removed. Everything it uses is bound now, so reassigning a module's
    or a builtin's name later (os.path.realpath = ..., builtins.isinstance = ...) does not change what it checks."""
    realpath, fsdecode, sep, forbidden, type_, any_, int_, str_ = (os.path.realpath, os.fsdecode, os.sep, Forbidden,
                                                                 type, any, int, str)
    root, blocked, path_events, write_flags = realpath(workdir), BLOCKED, PATH_EVENTS, WRITE_FLAGS
    path_types = (str, bytes)

    def inside(path) -> bool:
        if type_(path) is int_:
            return path >= 0  # an open descriptor; dir_fd-relative paths are confined by the read-only system
        real = realpath(fsdecode(path))
        return real == root or real.startswith(root + sep)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writes = (type_(mode) is str_ and any_(c in mode for c in "wax+")) or \
                     (type_(flags) is int_ and flags & write_flags)
            if writes and not inside(path):
                raise forbidden(f"sandbox: writing {fsdecode(path)!r} outside the working directory is not allowed")
        elif event.startswith(blocked):
            raise forbidden(f"sandbox: {event} is not allowed")
        elif event.startswith(path_events):
            for arg in args:
                if type_(arg) in path_types and not inside(arg):
                    raise forbidden(f"sandbox: {event} on {fsdecode(arg)!r} outside the working directory")

    sys.addaudithook(hook)


def outcome_of(run) -> dict:
    """Run `run()` and classify how it ended: passed, syntax_error, assertion, memory, forbidden or crash."""
    try:
        run()
    except SyntaxError as err:  # IndentationError too
        return {"kind": "syntax_error", "detail": f"{type(err).__name__}: {err}"[:300]}
    except AssertionError as err:
        return {"kind": "assertion", "detail": f"AssertionError: {err}"[:300]}
    except MemoryError:
        return {"kind": "memory", "detail": "MemoryError: the memory limit was reached"}
    except Forbidden as err:
        return {"kind": "forbidden", "detail": str(err)[:300]}
    except SystemExit as err:
        return {"kind": "crash", "detail": f"SystemExit({err.code!r}) before the tests finished"[:300]}
    except BaseException as err:  # noqa: BLE001 - every failure of untrusted code is an outcome
        return {"kind": "crash", "detail": f"{type(err).__name__}: {err}"[:300]}
    return {"kind": "passed", "detail": ""}


def compiled(source: str, name: str):
    try:
        return compile(source, name, "exec")
    except ValueError as err:  # null bytes
        raise SyntaxError(str(err)) from None


# ---- the two roles ---------------------------------------------------------------------------------------------
def solution(inp, out, job: dict) -> None:
    """Execute the untrusted module, report how that went, then answer calls until the channel closes."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    loaded = outcome_of(lambda: exec(compiled(job["source"], "<solution>"), namespace))
    loaded["names"] = [n for n, v in list(namespace.items()) if callable(v) and not n.startswith("__")]
    send(out, {"loaded": loaded})
    while True:
        try:
            call = receive(inp)
        except EOFError:
            return
        send(out, answer(call, namespace))


def answer(call: dict, namespace: dict) -> dict:
    classes = {n: v for n, v in namespace.items() if isinstance(v, type)}
    reply = {"seq": call["seq"]}
    try:
        args, kwargs = decode(call["args"], classes), decode(call["kwargs"], classes)
        value = namespace[call["name"]](*args, **kwargs)
        reply["value"] = encode(value)
        reply["after"] = [encode(a) if isinstance(a, (list, dict, set, bytearray)) else None for a in args]
    except Forbidden as err:
        reply["error"] = {"type": "Forbidden", "message": str(err)[:300]}
    except BaseException as err:  # noqa: BLE001 - the solution's exception becomes the caller's
        reply["error"] = {"type": type(err).__name__, "message": str(err)[:300]}
    return reply


class Channel:
    """The driver's side of the relay to the solution, with the number of the last call (replies must match it)."""

    def __init__(self, inp, out):
        self.inp, self.out, self.seq = inp, out, 0


class Proxy:
    """The tested function as the driver sees it: each call is a round trip to the solution's process."""

    def __init__(self, name: str, channel: Channel, classes: dict):
        self.name, self.channel, self.classes = name, channel, classes
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        inp, out = self.channel.inp, self.channel.out
        self.channel.seq += 1
        seq = self.channel.seq
        send(out, {"to": "solution", "msg": {"seq": seq, "name": self.name, "args": encode(list(args)),
                                              "kwargs": encode(kwargs)}})
        try:
            reply = receive(inp)
        except (EOFError, ValueError) as err:
            raise SolutionGone(f"the solution's process ended during a call of {self.name} ({err})") from None
        if reply.get("seq") != seq:
            raise SolutionGone(f"the solution's process answered out of turn during a call of {self.name}")
        if "error" in reply:
            raise rebuilt(reply["error"])
        for arg, after in zip(args, reply.get("after") or []):
            write_back(arg, after, self.classes)
        return decode(reply.get("value"), self.classes)


def rebuilt(error: dict) -> BaseException:
    name, message = str(error.get("type")), str(error.get("message"))[:300]
    if name == "Forbidden":
        return Forbidden(message)
    cls = EXCEPTIONS.get(name, RuntimeError)
    try:
        return cls(message) if cls is not RuntimeError else RuntimeError(f"{name}: {message}")
    except TypeError:  # exceptions whose constructor wants more arguments (UnicodeDecodeError...)
        return RuntimeError(f"{name}: {message}")


def write_back(arg, after, classes) -> None:
    """The solution may change a list, dict or set it was given, as it could in one process."""
    if after is None:
        return
    value = decode(after, classes)
    if isinstance(arg, (list, bytearray)) and isinstance(value, (list, bytearray)):
        arg[:] = value
    elif isinstance(arg, dict) and isinstance(value, dict):
        arg.clear()
        arg.update(value)
    elif isinstance(arg, set) and isinstance(value, (set, frozenset)):
        arg.clear()
        arg.update(value)


def driver(inp, out, job: dict) -> None:
    """Wait for the solution to load, run the trusted context and the tests against it, report the outcome."""
    try:
        loaded = receive(inp)["loaded"]
    except (EOFError, ValueError, KeyError, TypeError) as err:
        loaded = {"kind": "crash", "detail": f"the solution's process ended before it loaded ({err})"}
    if not isinstance(loaded, dict) or loaded.get("kind") != "passed" or not job["tests"].strip():
        found = loaded if isinstance(loaded, dict) else {}
        kind = found.get("kind") if found.get("kind") in KINDS else "crash"
        send(out, {"result": {"kind": kind, "detail": str(found.get("detail", ""))[:300],
                              "network": job.get("network", "")}})
        return
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    context = trusted_context(job.get("context", ""), namespace)
    classes = {n: v for n, v in namespace.items() if isinstance(v, type)}
    channel = Channel(inp, out)
    names = [n for n in loaded.get("names", []) if isinstance(n, str)]
    builtin = set(vars(builtins))
    for name in names:  # the tested function, and functions the tests call that the trusted context lacks
        if name == job.get("entry_point") or (name not in namespace and name not in builtin):
            namespace[name] = Proxy(name, channel, classes)
    result = outcome_of(lambda: exec(compiled(job["tests"], "<tests>"), namespace))
    if context:
        result["detail"] = (result["detail"] + f" (context: {context})").strip()[:300]
    send(out, {"result": {**result, "network": job.get("network", "")}})  # set here by the 'process' executor


def trusted_context(context: str, namespace: dict) -> str:
    """The problem's own prompt (imports, helpers, classes), executed on the trusted side; '' or why it was not."""
    for source in (context, context + "\n    pass\n"):
        try:
            code = compile(source, "<context>", "exec")
        except (SyntaxError, ValueError):
            continue
        try:
            exec(code, namespace)
            return ""
        except BaseException as err:  # noqa: BLE001 - reported with the outcome
            return f"{type(err).__name__}: {err}"[:100]
    return "" if not context.strip() else "the prompt is not a complete program"


def main() -> None:
    role = sys.argv[1]
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # what the program prints or reads never touches the channel
    os.dup2(null, 1)
    job = receive(inp)
    if job.get("isolate_network"):
        job["network"] = isolate_network()
    limit(job["limits"])
    if job["limits"].get("audit_hook", True):
        guard(os.getcwd())
    del sys.argv[1:]
    if role == "solution":
        solution(inp, out, job)
    else:
        job.setdefault("tests", "")
        driver(inp, out, job)
    os._exit(0)  # skip interpreter teardown: objects the program left behind cannot change anything


if __name__ == "__main__":
    main()
