"""The process that runs inside a sandbox and executes samples, one at a time.

Started by `codegemma.eval.sandbox` as
`python -I sandbox_server.py WORKDIR KILL_ALL RESPONSE_FD JUDGE_FD SERVER_UID SAMPLE_UID JUDGE_UID`
inside bubblewrap (or, only with --unsafe-no-sandbox, directly). Standard library only, plus its
sibling `sandbox_python.py`: it runs under whatever interpreter the sandbox offers.

Protocol (frames are a 4-byte big-endian length + UTF-8 JSON): the parent writes requests to our
stdin and we answer on RESPONSE_FD.
  Python:  {"code": str, "nonce": str, "timeout": float, "limits": {...}}; the judge's half
           (the tests) arrives on JUDGE_FD, a pipe this process never reads: only the judge
           process forked for the sample reads it, so the tests never enter the memory of a
           process the sample's process is forked from.
  other languages: {"files": {name: text}, "steps": [{"argv", "timeout", "kind": "compile" |
           "run"}], "timeout", "nonce", "limits"}
  response: {"report": "PASS <nonce>" | "timed out" | "failed: <reason>", "output": str,
             "desync": bool}

Identities: as root (inside bubblewrap, holding only CAP_SETUID, CAP_SETGID and CAP_KILL) we
stay root and run the sample's process as SAMPLE_UID and the judge as JUDGE_UID, so the sample
can neither signal, trace nor read the judge or us. Otherwise (bubblewrap as a normal user, or
unsafe mode, where SERVER_UID is the one uid we drop to) all three share one uid, and we and the
judge are made undumpable: the kernel then refuses ptrace, /proc/PID/mem and /proc/PID/fd to a
process of the same uid. Every sample gets a fresh directory, rlimits, its own session, a
size-bounded output file that we created and read through our own descriptor (never by path,
so a FIFO in its place cannot block us); afterwards the whole tree is killed (as the sandbox's
PID 1, every other process) and every writable place wiped.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_python  # noqa: E402  (our sibling, mounted beside us)

# Modules benchmark programs import: loaded once here so each forked sample starts warm.
PRELOAD = ("math", "re", "typing", "collections", "itertools", "functools", "heapq", "bisect",
           "string", "hashlib", "random", "copy", "operator", "statistics", "fractions",
           "decimal", "datetime", "array", "cmath", "json", "threading", "traceback")

REQUEST_FD = 0
OUTPUT_FILE = ".output"     # sample stdout+stderr, bounded by RLIMIT_FSIZE
OUTPUT_TAIL = 2000          # characters of output sent back for diagnostics
PR_SET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 3, 4
LIBC = ctypes.CDLL(None, use_errno=True)


def set_limits(limits: dict) -> None:
    """Lower soft and hard limits together: the sample cannot raise them again."""
    table = {"cpu_s": resource.RLIMIT_CPU, "memory_bytes": resource.RLIMIT_AS,
             "processes": resource.RLIMIT_NPROC, "file_bytes": resource.RLIMIT_FSIZE,
             "open_files": resource.RLIMIT_NOFILE}
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, which in table.items():
        value = limits.get(key)
        if value:
            resource.setrlimit(which, (int(value), int(value)))


def undumpable() -> None:
    """No ptrace, /proc/PID/mem or /proc/PID/fd for processes of our uid; and die with our
    parent (a uid change clears that setting, so this is called again after each one)."""
    LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if LIBC.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise SystemExit("sandbox: could not make the server undumpable")


def become(uid: int) -> None:
    """For good, in a forked child: from root to `uid` (every capability is cleared)."""
    if uid < 0:
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if 0 in os.getresuid():
        raise SystemExit("sandbox: could not drop root privileges")


@contextlib.contextmanager
def acting_as(uid: int):
    """Our file operations as `uid` for a moment (we keep root as the saved uid), so that what
    we create belongs to the sample and what it made, mode 000 or not, can be removed."""
    if uid < 0:
        yield
        return
    os.setresgid(-1, uid, -1)
    os.setresuid(-1, uid, -1)
    try:
        yield
    finally:
        os.setresuid(-1, 0, -1)
        os.setresgid(-1, 0, -1)
        undumpable()


class Context:
    def __init__(self, workdir: str, kill_all: bool, judge_fd: int, sample_uid: int,
                 judge_uid: int):
        self.workdir, self.kill_all, self.judge_fd = workdir, kill_all, judge_fd
        self.sample_uid, self.judge_uid = sample_uid, judge_uid
        # Inside the sandbox these are private tmpfs mounts; outside (unsafe) only our own dir.
        self.scratch = ["/tmp", "/var/tmp", "/dev/shm"] if kill_all else [workdir]


def spawn(ctx: Context, uid: int, keep: dict[int, int], cwd: str, limits: dict, main,
          _exit=os._exit) -> int:
    """Fork a child in its own session running `main()` as `uid`, with only the descriptors in
    `keep` ({fd in the child: fd here}; 0, 1, 2 default to /dev/null)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        wanted = {0: null, 1: null, 2: null, **keep}
        floor = max(wanted) + 1  # copies above every target first: no clobbering while moving
        moved = {fcntl.fcntl(src, fcntl.F_DUPFD, floor): dst for dst, src in wanted.items()}
        for src, dst in moved.items():
            os.dup2(src, dst)
        start = 0
        for fd in sorted(wanted) + [max(max(moved) + 1, 4096)]:
            if start < fd:  # closerange(a, a) closes far more than nothing on some Pythons
                os.closerange(start, fd)
            start = fd + 1
        set_limits(limits)
        become(uid)
        os.chdir(cwd)  # as `uid`: the sample's directory is its own, mode 0700
        undumpable()
        main()
    except BaseException:  # a bug of ours: the parent reports "no verdict"; say why
        import traceback
        os.write(2, traceback.format_exc().encode()[-2000:])
    finally:
        _exit(70)  # bound at import: the sample's process may have replaced os._exit


def wait_report(fd: int, deadline: float) -> tuple[bytes, bool]:
    """(report, timed_out): what a child wrote on `fd` until it closed it or time ran out."""
    report = b""
    while True:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            return report, True
        chunk = os.read(fd, 4096)
        if not chunk:
            return report, False
        report = (report + chunk)[-4096:]


def describe_exit(status: int | None) -> str:
    if status is None:
        return "failed: the sample closed its channel to the judge"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "timed out"
        if sig == signal.SIGXFSZ:
            return "failed: crash (file or output size limit)"
        return f"failed: crash (signal {signal.Signals(sig).name})"
    code = os.WEXITSTATUS(status)
    if code == 0:
        return "failed: exited early (status 0 before the tests finished)"
    return f"failed: crash (exit status {code})"


def reap(pids: list[int], ctx: Context, grace_pid: int | None = None) -> dict[int, int]:
    """Kill the sample's whole tree and reap it; {pid: status} for `pids`. `grace_pid` gets a
    moment to finish exiting on its own first (its status explains a closed channel)."""
    statuses: dict[int, int] = {}
    if grace_pid is not None:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            got, status = os.waitpid(grace_pid, os.WNOHANG)
            if got:
                statuses[got] = status
                break
            time.sleep(0.001)
    if ctx.kill_all:  # we are PID 1 of the sandbox's PID namespace: this reaches everyone else
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
    else:  # never kill(-1) outside a sandbox: it would hit all our processes
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        statuses.setdefault(got, status)
        if not ctx.kill_all and all(p in statuses for p in pids):
            break
    return statuses


def output_tail(fd: int) -> str:
    size = os.fstat(fd).st_size
    start = max(size - OUTPUT_TAIL, 0)
    return os.pread(fd, size - start, start).decode("utf-8", "replace")


def wipe(directory: str) -> None:
    """Empty `directory`, even where a sample removed permissions from what it made."""
    if os.path.islink(directory):  # a sample replaced its directory by a link: follow nothing
        os.unlink(directory)
        return
    for root, dirs, _files in os.walk(directory):
        for name in dirs:  # before os.walk descends: a mode-000 directory cannot be listed
            path = os.path.join(root, name)
            if not os.path.islink(path) and os.lstat(path).st_uid == os.geteuid():
                os.chmod(path, stat.S_IRWXU)
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.lstat(path).st_uid != os.geteuid():  # another identity's: its own pass removes it
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def fresh_workdir(ctx: Context) -> int:
    """The sample's empty directory and its output file; our descriptor of that file."""
    with acting_as(ctx.sample_uid):
        os.makedirs(ctx.workdir, mode=0o700, exist_ok=True)
        return os.open(os.path.join(ctx.workdir, OUTPUT_FILE),
                       os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_APPEND, 0o600)


def clean_up(ctx: Context) -> None:
    """Everything a sample could write goes, so nothing carries over to the next one."""
    for uid in dict.fromkeys([ctx.sample_uid, ctx.judge_uid]):
        with acting_as(uid):
            for directory in ctx.scratch:
                if os.access(directory, os.W_OK, effective_ids=True):
                    wipe(directory)


def run_python(request: dict, ctx: Context, out: int) -> tuple[str, bool]:
    """(report, timed_out) for one Python sample: its process and the judge's."""
    to_sample_r, to_sample_w = os.pipe()
    to_judge_r, to_judge_w = os.pipe()
    report_r, report_w = os.pipe()
    limits, nonce = request.get("limits", {}), request["nonce"]

    def judge() -> None:
        try:
            spec = sandbox_python.receive(3, limit=1 << 30)
        except (EOFError, sandbox_python.ProtocolError):
            spec = None
        if type(spec) is not dict or spec.get("nonce") != nonce:
            os.write(6, b"failed: the judge's channel is out of step")
            os._exit(1)
        sandbox_python.judge_main(spec, 4, 5, 6)

    sample = spawn(ctx, ctx.sample_uid, {1: out, 2: out, 3: to_sample_r, 4: to_judge_w},
                   ctx.workdir, limits,
                   lambda: sandbox_python.sample_main(request["code"], 3, 4))
    judge_pid = spawn(ctx, ctx.judge_uid, {3: ctx.judge_fd, 4: to_sample_w, 5: to_judge_r,
                                           6: report_w}, "/", limits, judge)
    for fd in (to_sample_r, to_sample_w, to_judge_r, to_judge_w, report_w):
        os.close(fd)
    report, timed_out = wait_report(report_r, time.monotonic() + float(request["timeout"]) + 0.5)
    os.close(report_r)
    ended = report == b"failed: sample ended"
    statuses = reap([sample, judge_pid], ctx, grace_pid=sample if ended else None)
    if timed_out:
        return "timed out", True
    if report == b"ok":
        return f"PASS {nonce}", False
    if ended:
        return describe_exit(statuses.get(sample)), False
    if report.startswith(b"failed: "):
        return report.decode("utf-8", "replace"), False
    judge_status = statuses.get(judge_pid)
    if judge_status is not None and os.WIFSIGNALED(judge_status):
        if os.WTERMSIG(judge_status) == signal.SIGXCPU:
            return "timed out", False
        return (f"failed: the judge was killed (signal "
                f"{signal.Signals(os.WTERMSIG(judge_status)).name})"), False
    return "failed: the judge ended without a verdict", False


def run_steps(request: dict, ctx: Context, out: int) -> tuple[str, bool]:
    """(report, timed_out) for a compiled/other-language sample: each step is a program of its
    own; the run step gets the nonce on stdin and must exit 0 with "PASS <nonce>" last."""
    report_r, report_w = os.pipe()
    nonce = request["nonce"]

    def runner() -> None:
        for name, text in request["files"].items():
            with open(os.path.basename(name), "w", encoding="utf-8") as fh:
                fh.write(text)
        for step in request["steps"]:
            outcome = run_step(step, nonce)
            if outcome != "ok":
                os.write(3, outcome.encode()[:1000])
                os._exit(0)
        os.write(3, f"PASS {nonce}".encode())
        os._exit(0)

    pid = spawn(ctx, ctx.sample_uid, {1: out, 2: out, 3: report_w}, ctx.workdir,
                request.get("limits", {}), runner)
    os.close(report_w)
    report, timed_out = wait_report(report_r, time.monotonic() + float(request["timeout"]) + 0.5)
    os.close(report_r)
    reap([pid], ctx)
    text = report.decode("utf-8", "replace")
    if timed_out:
        return "timed out", True
    if text == f"PASS {nonce}" or text == "timed out" or text.startswith("failed: "):
        return text, False
    return "failed: crash (the test runner ended early)", False


def run_step(step: dict, nonce: str) -> str:
    """Runs one step in the runner (a child of ours, with the sample's uid); 'ok' or why not."""
    is_run = step["kind"] == "run"
    os.ftruncate(1, 0)
    stdin_r, stdin_w = os.pipe()
    if is_run:
        os.write(stdin_w, f"{nonce}\n".encode())
    os.close(stdin_w)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(stdin_r, 0)
            os.close(3)
            os.execvp(step["argv"][0], step["argv"])
        finally:
            os._exit(127)
    os.close(stdin_r)
    deadline = time.monotonic() + float(step["timeout"])
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            break
        if time.monotonic() > deadline:
            return "timed out" if is_run else "failed: compile timed out"
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        return describe_exit(status)
    code = os.WEXITSTATUS(status)
    if not is_run:
        return "ok" if code == 0 else f"failed: compile error: {output_tail(1)[-300:]}"
    last = output_tail(1)[-200:].rstrip("\n").rsplit("\n", 1)[-1]
    if code != 0:
        return f"failed: test failed (exit status {code})"
    if last.strip() != f"PASS {nonce}":
        return "failed: exited early (the tests did not finish)"
    return "ok"


def run_one(request: dict, ctx: Context) -> dict:
    out = fresh_workdir(ctx)
    try:
        run = run_steps if "steps" in request else run_python
        report, timed_out = run(request, ctx, out)
        output = output_tail(out)
    finally:
        os.close(out)
    # Bytes the judge left unread on its channel would be read by the next judge: say so, and
    # the parent starts a fresh sandbox.
    pending = bytearray(4)
    fcntl.ioctl(ctx.judge_fd, termios.FIONREAD, pending)
    clean_up(ctx)
    return {"report": report, "timed_out": timed_out, "output": output,
            "desync": struct.unpack("i", bytes(pending))[0] != 0}


def main() -> None:
    workdir, kill_all = sys.argv[1], sys.argv[2] == "1"
    response_fd, judge_fd = int(sys.argv[3]), int(sys.argv[4])
    server_uid, sample_uid, judge_uid = (int(a) for a in sys.argv[5:8])
    for name in PRELOAD:  # before dropping root: the stdlib may sit under /root (pyenv)
        __import__(name)
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # samples may compute big integers; the judge bounds answers
    sys.dont_write_bytecode = True
    become(server_uid)
    undumpable()
    # As PID 1 of the sandbox, a signal sent from inside reaches us only if we handle it:
    # handle none (Python's SIGINT handler would let a sample interrupt the server).
    for sig in (signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    ctx = Context(workdir, kill_all, judge_fd, sample_uid, judge_uid)
    send = sandbox_python.send
    send(response_fd, {"ready": True, "uid": os.getuid()})
    while True:
        try:
            request = sandbox_python.receive(REQUEST_FD, limit=1 << 30)
        except EOFError:  # the parent is gone: so are we, and with us (PID 1) the sandbox
            return
        send(response_fd, run_one(request, ctx))


if __name__ == "__main__":
    main()
