"""The executors of the sandbox (tasks.backends.sandbox): how one side of a program (solution or driver) is started,
isolated and killed. Each side talks over its stdin/stdout only, so any runtime that forwards those can host it."""

import hashlib
import os
import platform
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NOBODY = 65534
KIT = ("sandbox_runner.py", "sandbox_values.py")  # what runs inside: mounted read-only at /sandbox
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
# Syscalls refused (EPERM) inside bwrap, x86_64 numbers: debugging and memory of other processes, pidfds, mounts and
# namespaces, kernel modules, keyrings, bpf, perf, userfaultfd, io_uring, file handles, reboot, swap, accounting.
DENIED = {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_send_signal": 424,
          "pidfd_open": 434, "pidfd_getfd": 438, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
          "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
          "fsmount": 432, "fspick": 433, "mount_setattr": 442, "init_module": 175, "finit_module": 313,
          "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "keyctl": 250, "add_key": 248,
          "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
          "io_uring_enter": 426, "io_uring_register": 427, "name_to_handle_at": 303, "open_by_handle_at": 304,
          "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179, "personality": 135,
          "lookup_dcookie": 212, "iopl": 172, "ioperm": 173, "syslog": 103}
CONTAINER_PYTHON, CONTAINER_RUNNER = "python3", "/sandbox/sandbox_runner.py"  # inside the image
CLONE, CLONE_NS_FLAGS = 56, 0x7E020000  # clone() asking for any new namespace (user, pid, net, mount, ...)


@dataclass
class Side:
    proc: subprocess.Popen
    stdin: int
    stdout: int
    errors: Path
    network: str = ""
    stop: list = field(default_factory=list)  # a command that stops it (a container by name)

    def last_error(self) -> str:
        """The last line the side wrote to its stderr (its own file, bounded by the file-size limit)."""
        with open(self.errors, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 2000))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1][:200] if lines else ""

    def kill(self) -> None:
        """The whole tree: the process group (bwrap's namespace dies with it), or the container."""
        if self.stop:
            subprocess.run(self.stop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # gone already
        self.proc.wait()
        try:
            os.close(self.stdout)
        except OSError:
            pass  # closed already (a second kill)


def seccomp_filter() -> bytes:
    """A classic BPF program for `bwrap --seccomp`: the DENIED syscalls and namespace-creating clone() get EPERM,
    another architecture (or the x32 ABI) is killed, everything else is allowed."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, deny, kill = 0x7FFF0000, 0x00050000 | 1, 0x80000000  # SECCOMP_RET_ERRNO | EPERM, KILL_PROCESS
    numbers = sorted(DENIED.values())
    n = len(numbers)
    # 0 ld arch; 1 jeq x86_64; 2 ld nr; 3 jge x32; 4..4+n-1 jeq denied; 4+n jeq clone; 5+n ld flags; 6+n jset ns;
    # 7+n ret allow; 8+n ret deny; 9+n ret kill
    prog = [(ld, 0, 0, 4), (jeq, 0, 7 + n, 0xC000003E), (ld, 0, 0, 0), (jge, 4 + n, 0, 0x40000000)]
    prog += [(jeq, 8 + n - (4 + i) - 1, 0, nr) for i, nr in enumerate(numbers)]
    prog += [(jeq, 0, 2, CLONE), (ld, 0, 0, 16), (jset, 1, 0, CLONE_NS_FLAGS), (ret, 0, 0, allow), (ret, 0, 0, deny),
             (ret, 0, 0, kill)]
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


def _system_binds() -> list[str]:
    """A read-only view of /usr and the Python installation: nothing else of this machine is visible."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = os.path.realpath(sys.base_prefix)
    if not prefix.startswith("/usr/"):
        parents = [p for p in Path(prefix).parents if str(p) != "/"]
        for parent in reversed(parents):  # traversable even where the real folder is not (/root is 0700)
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    return args


def kit() -> Path:
    """A folder holding only the runner and its helper (never the rest of the project), made once per version and
    used only while it is ours and unchanged (a shared /tmp is writable by others)."""
    texts = [Path(__file__).with_name(name).read_bytes() for name in KIT]
    folder = Path(tempfile.gettempdir()) / f"curate-sandbox-{hashlib.sha256(b''.join(texts)).hexdigest()[:12]}"
    if _is_kit(folder, texts):
        return folder
    tmp = Path(tempfile.mkdtemp(prefix="curate-sandbox-"))
    for name, text in zip(KIT, texts):
        (tmp / name).write_bytes(text)
        (tmp / name).chmod(0o644)
    tmp.chmod(0o755)
    try:
        tmp.rename(folder)
    except OSError:  # made meanwhile, by us or by someone else: keep this private copy then
        return folder if _is_kit(folder, texts) else tmp
    return folder


def _is_kit(folder: Path, texts: list[bytes]) -> bool:
    try:
        return folder.stat().st_uid == os.geteuid() and not folder.is_symlink() and all(
            (folder / n).stat().st_uid == os.geteuid() and (folder / n).read_bytes() == t for n, t in zip(KIT, texts))
    except OSError:
        return False


def _bwrap(role: str, work: Path, kit: Path) -> tuple[list[str], tuple[int, ...]]:
    python = os.path.realpath(sys.executable)
    argv = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", *_system_binds(), "--proc", "/proc", "--dev", "/dev",
            "--bind", str(work), "/work", "--ro-bind", str(kit), "/sandbox", "--chdir", "/work"]
    for key, value in {**ENV, "HOME": "/work", "TMPDIR": "/work"}.items():
        argv += ["--setenv", key, value]
    fds: tuple[int, ...] = ()
    if platform.machine() == "x86_64":
        fd = os.memfd_create("curate-seccomp")
        os.write(fd, seccomp_filter())
        os.lseek(fd, 0, os.SEEK_SET)
        argv += ["--seccomp", str(fd)]
        fds = (fd,)
    if os.geteuid() == 0:  # as root, bwrap sets up the mounts; the program then runs as nobody
        argv += ["--", "/usr/bin/setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    else:
        argv.insert(1, "--unshare-user")
        argv += ["--"]
    return argv + [python, "-I", "-S", CONTAINER_RUNNER, role], fds


def _container(role: str, work: Path, kit: Path, memory_mb: int) -> tuple[list[str], list[str]]:
    name = f"curate-exec-{uuid.uuid4().hex[:12]}"
    template = os.environ["CURATE_SANDBOX_CONTAINER"]
    line = template.format(work=shlex.quote(str(work)), sandbox=shlex.quote(str(kit)), name=name,
                           memory_mb=memory_mb)
    runtime = shlex.split(line)[0]
    return shlex.split(line) + [CONTAINER_PYTHON, "-I", "-S", CONTAINER_RUNNER, role], [runtime, "kill", name]


def start(executor: str, role: str, work: Path, limits) -> Side:
    """Start one side in its own empty working directory; its stderr goes to a file there (bounded by the
    file-size limit)."""
    work.mkdir(mode=0o700)
    if executor in ("bwrap", "container") and os.geteuid() == 0:
        os.chown(work, NOBODY, NOBODY)
    fds: tuple[int, ...] = ()
    stop: list[str] = []
    network = "namespace"
    if executor == "bwrap":
        argv, fds = _bwrap(role, work, kit())
    elif executor == "container":
        argv, stop = _container(role, work, kit(), limits.memory_mb)
    else:
        argv, network = [sys.executable, "-I", "-S", str(kit() / KIT[0]), role], ""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    try:
        with open(errors := work.parent / f"{role}.stderr", "wb") as stderr:
            proc = subprocess.Popen(argv, stdin=stdin_r, stdout=stdout_w, stderr=stderr, cwd=work, pass_fds=fds,
                                    env={**ENV, "HOME": str(work), "TMPDIR": str(work)}, start_new_session=True)
    finally:
        for fd in (stdin_r, stdout_w, *fds):
            os.close(fd)
    return Side(proc, stdin_w, stdout_r, errors, network, stop)
