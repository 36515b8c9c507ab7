"""Nothing outlives the scorer: special files where output is expected, Ctrl-C, exceptions and
a killed scorer leave no sandbox process and no cgroup; a scorer that is not root gets the same
verdicts and the same protection of the user's files. Real subprocesses throughout."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from codegemma.eval.sandbox import (CGROUP_PARENT, CGROUP_ROOT, UID_BASE, Cgroups, Sandbox,
                                    SandboxLimits)

REPO = Path(__file__).resolve().parents[2]
TEST = "def check(candidate):\n    assert candidate() == 1\n"
WRONG = "def f():\n    return 2\n"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="identifies sandbox processes by the "
                               "uids a root scorer gives them")


def scorer_processes(scorer_pid: int) -> list[int]:
    """Processes of the sandboxes of the scorer `scorer_pid` (root): samples and judges by
    their uids, servers and bubblewrap by the uids in their command lines."""
    first = UID_BASE + (scorer_pid % 10_000) * 64 * 2
    uids = {str(u) for u in range(first, first + 128)}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        if uids & set(ids) or uids & {a.decode(errors="replace") for a in args}:
            found.append(int(pid))
    return found


def processes_with_uid(uid: int) -> list[int]:
    return [p for p in scorer_processes(os.getpid()) if str(uid) in
            Path(f"/proc/{p}/status").read_text() + Path(f"/proc/{p}/cmdline").read_text()]


def scorer_cgroups(scorer_pid: int) -> list[Path]:
    return [d for c in ("memory", "pids")
            for d in (CGROUP_ROOT / c / CGROUP_PARENT).glob(f"{scorer_pid}-*")]


def wait_until(condition, seconds: float = 20.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.parametrize("trick", [
    "import os\nos.unlink('.output')\nos.mkfifo('.output')\n",
    "import os\nos.unlink('.output')\nos.symlink('/dev/zero', '.output')\n",
    "import os\nos.mkfifo('/tmp/f')\nos.mkfifo('/var/tmp/f')\nos.mkfifo('/dev/shm/f')\n"
    "os.rename('/tmp/sample', '/tmp/moved')\nos.symlink('/etc', '/tmp/sample')\n",
    "import os, socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('.output2')\nos.unlink('.output')\n"
    "os.rename('.output2', '.output')\n",
])
def test_special_files_where_output_is_expected_do_not_hang_or_leak(trick):
    with Sandbox(SandboxLimits(timeout_s=3.0), slot=11) as sb:
        start = time.monotonic()
        result = sb.run(trick + "print('said')\n" + WRONG, TEST, "f")
        assert result.result == "failed: assertion"
        assert time.monotonic() - start < 10
        assert sb.run("def f():\n    return 1\n", TEST, "f").passed  # the same sandbox, clean
        clean = ("import os\nassert os.listdir('.') == ['.output'], os.listdir('.')\n"
                 "assert os.listdir('/tmp') == ['sample'] and os.listdir('/var/tmp') == []\n"
                 "def f():\n    return 1\n")
        assert sb.run(clean, TEST, "f").passed
        cgroups = sb._cgroups.dirs if sb._cgroups else []
    assert not any(d.exists() for d in cgroups)
    if os.geteuid() == 0:
        assert processes_with_uid(sb.uid) == [] and processes_with_uid(sb.judge_uid) == []


SCORER = """
import json, sys
from codegemma.eval import harness
from codegemma.eval.registry import Benchmark, Problem
bench = Benchmark("toy", "humaneval", 3, "toy")
problems = [Problem(f"T/{i}", "def f():\\n", "    return 1\\n", %(test)r, "f") for i in range(3)]
samples = %(samples)s
print("scoring", flush=True)
harness.score(bench, problems, samples, timeout_s=60, workers=2, progress=False)
"""


def start_scorer(samples: list[dict]) -> subprocess.Popen:
    code = SCORER % {"test": TEST, "samples": json.dumps(samples)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


LOOP = "    while True:\n        pass\n"


@root_only
def test_ctrl_c_while_scoring_kills_every_sandbox():
    scorer = start_scorer([{"task_id": f"T/{i}", "completion": LOOP} for i in range(3)])
    try:
        assert scorer.stdout.readline().strip() == "scoring"
        assert wait_until(lambda: len(scorer_processes(scorer.pid)) >= 6), "sandboxes running"
        scorer.send_signal(signal.SIGINT)
        _, err = scorer.communicate(timeout=20)  # the samples would run for 60 s
        assert "KeyboardInterrupt" in err
    finally:
        scorer.kill()
    assert wait_until(lambda: not scorer_processes(scorer.pid))
    assert scorer_cgroups(scorer.pid) == []


@root_only
def test_an_exception_while_scoring_kills_every_sandbox():
    samples = [{"task_id": "T/0", "completion": LOOP}, {"task_id": "T/1", "completion": LOOP},
               {"task_id": "T/2", "completion": 12345}]  # not text: fails in the harness
    scorer = start_scorer(samples[2:] + samples[:2])
    _, err = scorer.communicate(timeout=30)
    assert "AttributeError" in err
    assert wait_until(lambda: not scorer_processes(scorer.pid))
    assert scorer_cgroups(scorer.pid) == []


@root_only
def test_a_scorer_killed_outright_takes_its_sandboxes_with_it():
    code = ("from codegemma.eval.sandbox import Sandbox, SandboxLimits\n"
            "sb = Sandbox(SandboxLimits(timeout_s=60))\nsb.start()\nprint('up', flush=True)\n"
            "sb.run('import time\\ntime.sleep(60)\\n', 'def check(c):\\n    pass\\n', 'f')\n")
    scorer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert scorer.stdout.readline().strip() == "up"
    assert wait_until(lambda: len(scorer_processes(scorer.pid)) >= 3)  # bwrap, server, sample
    scorer.kill()  # SIGKILL: no finalizer, no cleanup of ours runs
    scorer.wait()
    assert wait_until(lambda: not scorer_processes(scorer.pid))
    # Its cgroups stay behind, empty, until the next sandbox that starts removes them.
    with Sandbox(SandboxLimits(timeout_s=3.0), slot=12) as sb:
        sb.start()
    assert scorer_cgroups(scorer.pid) == []


NOBODY = 65534
NON_ROOT_SCRIPT = r"""
import json, os, sys, time
from codegemma.eval.sandbox import Sandbox, SandboxLimits
attacks = json.loads(sys.argv[1])
out = {}
with Sandbox(SandboxLimits(timeout_s=3.0)) as sb:
    for name, code in attacks.items():
        r = sb.run(code, "def check(candidate):\n    assert candidate() == 1\n", "f")
        out[name] = [r.passed, r.result, r.output[-300:]]
    server = [p for p in os.listdir("/proc") if p.isdigit() and
              open(f"/proc/{p}/status").read().count(f"PPid:\t{sb.proc.pid}\n")]
    out["_pids"] = [sb.proc.pid] + [int(p) for p in server]
print(json.dumps(out))
"""


def nobody_python() -> str | None:
    """An interpreter the user nobody may run, with ctypes."""
    check = "import ctypes, os, sys; assert os.access(os.path.realpath(sys.executable), os.R_OK)"
    for python in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable):
        probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                "--clear-groups", python, "-c", check], capture_output=True)
        if probe.returncode == 0:
            return python
    return None


@pytest.fixture
def nobody_dir():
    """A folder the user nobody owns, outside /tmp (which no sandbox ever shows): where a
    user's home could be."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="codegemma-nobody-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="runs the scorer as the user nobody, which needs root and setpriv")
def test_a_scorer_that_is_not_root(nobody_dir):
    """The scorer as nobody: bubblewrap in a user namespace, one uid for server, judge and
    sample. The user's home stays unreadable, the judge and server untraceable, and every
    forged pass fails."""
    python = nobody_python()
    if python is None:
        pytest.skip("no Python interpreter that the user nobody can run")
    home = nobody_dir / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    code_dir = nobody_dir / "code" / "codegemma" / "eval"
    code_dir.mkdir(parents=True)
    shutil.copy(REPO / "codegemma" / "__init__.py", code_dir.parent)
    for name in ("__init__.py", "sandbox.py", "sandbox_server.py", "sandbox_python.py",
                 "python_program.py"):
        shutil.copy(REPO / "codegemma" / "eval" / name, code_dir)
    for path in [nobody_dir, *nobody_dir.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    key = str(home / ".ssh" / "id_rsa")
    attacks = {
        "correct": "def f():\n    return 1\n",
        "wrong": WRONG,
        "read the home": f"def f():\n    return open({key!r}).read()\n",
        "home exists": f"import os\ndef f():\n    return 1 if os.path.exists({str(home)!r}) else 2\n",
        "trace the judge or server": (
            "import ctypes, os, threading\nlibc = ctypes.CDLL(None)\n"
            "mine = {os.getpid()} | {t.native_id for t in threading.enumerate()}\n"
            "hits = [p for p in range(1, 300) if p not in mine and libc.ptrace(16, p, 0, 0) == 0]\n"
            "print('attached', hits)\n" + WRONG),
        "interrupt the server": "import os, signal\nos.kill(1, signal.SIGINT)\n" + WRONG,
        "exec forgery": "import builtins\nbuiltins.exec = lambda c, ns=None, *a: "
                        "ns.update(check=lambda c: None)\n" + WRONG,
        "fifo output": "import os\nos.unlink('.output')\nos.mkfifo('.output')\n" + WRONG,
        "still correct": "def f():\n    return 1\n",
    }
    run = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-c",
         NON_ROOT_SCRIPT, json.dumps(attacks)],
        capture_output=True, text=True, timeout=120,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(nobody_dir / "code")})
    if run.returncode != 0 and "bubblewrap" in run.stderr:
        pytest.skip(f"no user namespaces here: {run.stderr.strip()[-300:]}")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    pids = out.pop("_pids")
    assert out.pop("correct")[0] and out.pop("still correct")[0]
    for name, (passed, result, output) in out.items():
        assert not passed, (name, result)
        assert "PRIVATE KEY" not in output + result
    assert "attached []" in out["trace the judge or server"][2]
    assert len(pids) == 2 and wait_until(lambda: not any(Path(f"/proc/{p}").exists()
                                                         for p in pids))


@root_only
def test_stale_cgroups_of_dead_scorers_are_removed():
    if not os.access(CGROUP_ROOT / "memory", os.W_OK):
        pytest.skip("no writable cgroup v1 hierarchy")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [CGROUP_ROOT / c / CGROUP_PARENT / f"{dead.pid}-1" for c in ("memory", "pids")]
    ours = CGROUP_ROOT / "memory" / CGROUP_PARENT / f"{os.getpid()}-stale-test"
    for d in stale + [ours]:
        d.mkdir(parents=True)
    try:
        with Sandbox(SandboxLimits(timeout_s=3.0), slot=13) as sb:
            sb.start()
        assert not any(d.exists() for d in stale)
        assert ours.exists()  # a live scorer's cgroup is left alone
    finally:
        Cgroups([ours, *stale]).remove()


def test_a_judge_channel_out_of_step_fails_the_sample_and_restarts_the_sandbox():
    """Should a judge ever leave its tests unread (killed before it read them), the next judge
    must not read them as its own: simulated by a stale frame written ahead of a sample's."""
    from codegemma.eval.sandbox_python import send
    with Sandbox(SandboxLimits(timeout_s=3.0), slot=14) as sb:
        sb.start()
        first = sb.proc.pid
        send(sb._judge_w, {"nonce": "stale", "context": "", "test": "", "remote": [],
                           "check": None})
        result = sb.run("def f():\n    return 1\n", TEST, "f")
        assert result.result == "failed: the judge's channel is out of step"
        assert sb.proc is None  # closed: its channel still held this sample's tests
        assert sb.run("def f():\n    return 1\n", TEST, "f").passed
        assert sb.proc.pid != first
