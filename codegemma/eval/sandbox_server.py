"""The process that runs inside a sandbox and executes samples, one at a time.

Started by `codegemma.eval.sandbox` as `python -I -c SOURCE WORKDIR KILL_ALL RESPONSE_FD UID` inside
bubblewrap (or, only with --unsafe-no-sandbox, directly). Standard library only: it runs under
whatever interpreter the sandbox offers and must import nothing from codegemma.

Protocol (frames are a 4-byte big-endian length + UTF-8 JSON): the parent writes requests to our
stdin, we answer on RESPONSE_FD. When UID is not -1 we start as root inside the sandbox (holding
only CAP_SETUID/CAP_SETGID) and drop to that unprivileged uid before doing anything else.
  request:  {"code": str, "test": str, "entry_point": str | null, "timeout": float,
             "nonce": str, "limits": {...}, "guard": bool (default true)}
  or, for other languages: {"files": {name: text}, "steps": [{"argv", "timeout", "kind":
             "compile" | "run"}], "timeout", "nonce", "limits"}
  The sample's code and the test are compiled and run as two separate units (so a completion
  cannot swallow the test into a string or comment), then `check(<entry_point>)` is called.
  response: {"exit": int | null, "signal": int | null, "timed_out": bool, "report": str, "output": str}

Per sample we fork a child (its own process tree and session), which:
  - closes the request/response channel, so a sample can neither read later requests nor answer;
  - chdirs into an empty working directory that is wiped after the sample (in the sandbox a
    private tmpfs), sets rlimits, sends stdout/stderr to a size-limited file;
  - installs an audit hook that blocks frame/gc/ctypes introspection and process creation;
  - runs the program in a *second thread*. The main thread holds the nonce and writes
    "PASS <nonce>" on the report pipe only when that thread finished `check(...)` normally.
    A sample that exits early (sys.exit, os._exit, SystemExit, killing itself, atexit) never
    reaches that line, and cannot find the nonce: it is not in the environment, argv, files or
    any fd, and the only objects holding it are main-thread frames, which the audit hook keeps
    out of reach (no sys._getframe/_current_frames, tb_frame, gi_frame, gc, ctypes, settrace).
After the child ends or its time is up, the whole tree is killed (as the sandbox's PID 1 we
kill every other process; outside a sandbox, the child's process group) and the directory wiped.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import time

# Modules benchmark programs import: loaded once here so each forked sample starts warm.
PRELOAD = ("math", "re", "typing", "collections", "itertools", "functools", "heapq", "bisect",
           "string", "hashlib", "random", "copy", "operator", "statistics", "fractions",
           "decimal", "datetime", "array", "cmath", "json", "_thread", "threading", "traceback")

REQUEST_FD = 0
OUTPUT_FILE = ".output"     # sample stdout+stderr, bounded by RLIMIT_FSIZE
OUTPUT_TAIL = 2000          # characters of output sent back for diagnostics

# Audit events a sample may not raise: they lead to frames (where the nonce lives), raw memory,
# or new processes (the OS limits still bound those if this guard is ever bypassed).
BLOCKED_EVENTS = frozenset({
    "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace",
    "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
    "subprocess.Popen", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
})
FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})
BLOCKED_IMPORTS = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "pty"})


def read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def write_frame(fd: int, obj: dict) -> None:
    data = json.dumps(obj).encode()
    os.write(fd, struct.pack(">I", len(data)) + data)


def audit_guard(event: str, args: tuple) -> None:
    if event in BLOCKED_EVENTS:
        # ValueError is what sys._getframe raises for "no such frame": library code that
        # probes the stack (typing, logging) treats it as "no caller information".
        raise ValueError(f"{event} is not allowed in the evaluation sandbox")
    if event == "object.__getattr__" and len(args) >= 2 and args[1] in FRAME_ATTRS:
        raise AttributeError(f"{args[1]} is not allowed in the evaluation sandbox")
    if event == "import" and args and str(args[0]).split(".")[0] in BLOCKED_IMPORTS:
        raise ImportError(f"module {args[0]} is not allowed in the evaluation sandbox")
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        if path.startswith("/proc") or "/proc/" in os.path.realpath(path):
            raise PermissionError(f"{path}: /proc is not available in the evaluation sandbox")


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


def run_sample_thread(units, entry_point, namespace: dict, clean_builtins: dict, outcome: list,
                      lock) -> None:
    """Target of the sample thread; `outcome` and `lock` are reachable only through frames."""
    try:
        sample_code, test_code = units
        exec(sample_code, namespace)
        # The tests see the builtins as they were before the sample ran (a sample that patches
        # builtins.abs/len/isinstance changes only what its own functions see).
        namespace["__builtins__"] = clean_builtins
        exec(test_code, namespace)
        if entry_point:
            check = namespace["check"]
            check(namespace[entry_point])
        outcome.append("ok")
    except AssertionError as exc:
        outcome.append(f"failed: assertion{': ' + str(exc)[:200] if str(exc) else ''}")
    except SystemExit as exc:
        outcome.append(f"failed: exited early (SystemExit {exc.code!r})")
    except BaseException as exc:  # the sample's own error, reported as its result
        outcome.append(f"failed: exception: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        lock.release()


def child_main(request: dict, report_w: int) -> None:
    """Runs in the forked child; never returns."""
    import _thread
    import io

    # The main thread only uses these references after the sample ran, so a sample that
    # replaces os.write/os._exit or sys.stdout gets no code run in the main thread.
    write, exit_now = os.write, os._exit
    os.setsid()
    out = os.open(OUTPUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(3, report_w)
    os.closerange(report_w + 1, 4096)
    timeout, nonce = float(request["timeout"]), request["nonce"]
    set_limits(request.get("limits", {}))
    # Unbuffered: os._exit below never flushes, and the main thread must not call sample code.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    try:
        units = (compile(request["code"], "<sample>", "exec"),
                 compile(request["test"], "<test>", "exec"))
    except (SyntaxError, ValueError) as exc:
        write(report_w, f"failed: syntax error: {exc}".encode()[:500])
        exit_now(1)
    import builtins
    namespace = {"__name__": "__sample__", "__builtins__": builtins}
    clean_builtins = dict(builtins.__dict__)
    outcome: list = []
    lock = _thread.allocate_lock()
    lock.acquire()
    if request.get("guard", True):  # off only in tests of the OS-level limits
        sys.addaudithook(audit_guard)
    _thread.stack_size(64 * 1024 * 1024)  # deep recursion in samples: 64 MiB thread stack
    _thread.start_new_thread(run_sample_thread,
                             (units, request.get("entry_point"), namespace, clean_builtins,
                              outcome, lock))
    try:
        finished = lock.acquire(timeout=timeout)
    except BaseException as exc:  # e.g. KeyboardInterrupt sent to the main thread
        write(report_w, f"failed: interrupted ({type(exc).__name__})".encode())
        exit_now(1)
    if not finished:
        write(report_w, b"timed out")
        exit_now(1)
    result = outcome[0] if outcome else "failed: exited early"
    if result == "ok":
        write(report_w, f"PASS {nonce}".encode())
        exit_now(0)
    write(report_w, result.encode()[:1000])
    exit_now(1)


def child_command(request: dict, report_w: int) -> None:
    """Runs in the forked child for compiled/other languages; never returns. No sample code runs
    in this process: each step is a separate program. The test program's epilogue reads the
    nonce from its stdin after the tests and prints "PASS <nonce>" as its last line."""
    write, exit_now = os.write, os._exit
    os.setsid()
    out = os.open(OUTPUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(3, report_w)
    os.closerange(report_w + 1, 4096)
    set_limits(request.get("limits", {}))
    for name, text in request["files"].items():
        with open(os.path.basename(name), "w", encoding="utf-8") as fh:
            fh.write(text)
    nonce = request["nonce"]
    for step in request["steps"]:
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
                write(report_w, b"timed out" if is_run else b"failed: compile timed out")
                exit_now(1)
            time.sleep(0.002)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            write(report_w, b"timed out" if sig == signal.SIGXCPU else
                  f"failed: crash (signal {signal.Signals(sig).name})".encode())
            exit_now(1)
        code = os.WEXITSTATUS(status)
        if not is_run:
            if code != 0:
                with open(OUTPUT_FILE, "rb") as fh:
                    tail = fh.read()[-300:].decode("utf-8", "replace")
                write(report_w, f"failed: compile error: {tail}".encode()[:1000])
                exit_now(1)
            continue
        with open(OUTPUT_FILE, "rb") as fh:
            fh.seek(max(os.fstat(fh.fileno()).st_size - 200, 0))
            last = fh.read().decode("utf-8", "replace").rstrip("\n").rsplit("\n", 1)[-1]
        if code != 0:
            write(report_w, f"failed: test failed (exit status {code})".encode())
            exit_now(1)
        if last.strip() != f"PASS {nonce}":
            write(report_w, b"failed: exited early (the tests did not finish)")
            exit_now(1)
    write(report_w, f"PASS {nonce}".encode())
    exit_now(0)


def wipe(directory: str) -> None:
    """Empty `directory`, even where a sample removed permissions from what it made."""
    for root, dirs, _files in os.walk(directory):
        for name in dirs:  # before os.walk descends: a mode-000 directory cannot be listed
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IRWXU)
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def kill_tree(pid: int, kill_all: bool) -> None:
    if kill_all:
        # We are PID 1 of the sandbox's PID namespace: kill(-1) reaches every other process.
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_one(request: dict, workdir: str, kill_all: bool, scratch: list[str]) -> dict:
    timeout = float(request["timeout"])
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_r)
            os.chdir(workdir)
            if "steps" in request:
                child_command(request, report_w)
            child_main(request, report_w)
        finally:
            os._exit(70)
    os.close(report_w)
    deadline = time.monotonic() + timeout + 0.5
    report, timed_out = b"", False
    while True:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([report_r], [], [], max(remaining, 0))
        if not ready:
            timed_out = True
            break
        chunk = os.read(report_r, 4096)
        if not chunk:
            break
        report = (report + chunk)[-4096:]
    os.close(report_r)
    kill_tree(pid, kill_all)  # never kill(-1) outside a sandbox: it would hit all our processes
    status = None
    while True:  # reap the child and, as PID 1, every orphan it left
        try:
            got, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if got == pid:
            status = st
            if not kill_all:
                break
    output = ""
    try:
        with open(os.path.join(workdir, OUTPUT_FILE), "rb") as fh:
            fh.seek(max(os.fstat(fh.fileno()).st_size - OUTPUT_TAIL, 0))
            output = fh.read().decode("utf-8", "replace")
    except OSError:
        pass
    # Everything a sample could write goes: its directory and, inside a sandbox, the rest of
    # the private /tmp, /var/tmp and /dev/shm, so nothing carries over to the next sample.
    for directory in scratch:
        if os.access(directory, os.W_OK):
            wipe(directory)
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    return {"exit": os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None,
            "timed_out": timed_out, "report": report.decode("utf-8", "replace"), "output": output}


def drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to non-root: every capability is cleared too
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("sandbox: could not drop root privileges")


def main() -> None:
    workdir, kill_all = sys.argv[1], sys.argv[2] == "1"
    # Inside the sandbox these are private tmpfs mounts; outside (unsafe) only our own dir.
    scratch = ["/tmp", "/var/tmp", "/dev/shm"] if kill_all else [workdir]
    response_fd, uid = int(sys.argv[3]), int(sys.argv[4])
    for name in PRELOAD:  # before dropping root: the stdlib may sit under /root (pyenv)
        __import__(name)
    if uid >= 0:
        drop_privileges(uid)
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    write_frame(response_fd, {"ready": True, "uid": os.getuid()})
    while True:
        try:
            size = struct.unpack(">I", read_exact(REQUEST_FD, 4))[0]
        except EOFError:
            return
        request = json.loads(read_exact(REQUEST_FD, size))
        write_frame(response_fd, run_one(request, workdir, kill_all, scratch))


if __name__ == "__main__":
    main()
