"""Hostile samples are contained, scored as failures or time-outs, and the host is unchanged."""

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from codegemma.eval.sandbox import Sandbox, SandboxLimits

WRONG = "def f():\n    return 2\n"          # wrong answer: only a trick could make it pass
TEST = "def check(candidate):\n    assert candidate() == 1\n"


def run(sb, code, guard=True, timeout=None):
    return sb.run(code, TEST, "f", timeout_s=timeout, guard=guard)


def assert_not_passed(result):
    assert not result.passed, result
    assert result.result == "timed out" or result.result.startswith("failed"), result


def test_a_correct_sample_passes_and_a_wrong_one_fails(sandbox):
    assert sandbox.run("def f():\n    return 1\n", TEST, "f").passed
    assert sandbox.run(WRONG, TEST, "f").result == "failed: assertion"
    assert sandbox.run("def f(:\n", TEST, "f").result.startswith("failed: syntax error")
    assert sandbox.run("def f():\n    return 1/0\n", TEST, "f").result.startswith(
        "failed: exception: ZeroDivisionError")


@pytest.mark.parametrize("guard", [True, False])
def test_files_outside_the_sample_directory_survive(sandbox, guard):
    host_dir = Path(tempfile.mkdtemp(prefix="canary-"))
    canaries = [host_dir / "canary.txt", Path.home() / f".codegemma-canary-{os.getpid()}"]
    for c in canaries:
        c.write_text("alive")
    try:
        code = "import os, shutil\n" + "".join(
            f"try:\n    os.remove({str(c)!r})\nexcept OSError:\n    pass\n"
            f"try:\n    open({str(c)!r}, 'w').write('gone')\nexcept OSError:\n    pass\n"
            for c in canaries) + (
            f"shutil.rmtree({str(host_dir)!r}, ignore_errors=True)\n"
            f"open({str(host_dir / 'new.txt')!r}, 'w').write('x')\n" + WRONG)
        assert_not_passed(run(sandbox, code, guard))
        assert [c.read_text() for c in canaries] == ["alive", "alive"]
        assert sorted(p.name for p in host_dir.iterdir()) == ["canary.txt"]
    finally:
        for c in canaries:
            c.unlink(missing_ok=True)
        host_dir.rmdir()


def test_the_sample_directory_is_fresh_for_every_sample(sandbox):
    write = ("import os\nopen('left.txt', 'w').write('x')\n"
             "for d in ('/tmp', '/var/tmp', '/dev/shm'):\n    try:\n"
             "        open(os.path.join(d, 'left.txt'), 'w').write('x')\n"
             "        os.makedirs(os.path.join(d, 'locked', 'in'))\n"
             "        os.chmod(os.path.join(d, 'locked'), 0)\n    except OSError:\n        pass\n"
             "def f():\n    return 1\n")
    assert sandbox.run(write, TEST, "f").passed
    look = ("import os\nassert os.listdir('.') == ['.output'], os.listdir('.')\n"
            "for d in ('/tmp', '/var/tmp', '/dev/shm'):\n"
            "    assert set(os.listdir(d)) <= {'sample'}, (d, os.listdir(d))\n"
            "def f():\n    return 1\n")
    assert sandbox.run(look, TEST, "f").passed


def test_network_is_unreachable(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = ("import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n" + WRONG)
    try:
        result = run(sandbox, code, guard=False)
        assert_not_passed(result)
        assert "Error" in result.result  # connection refused / unreachable, not an assertion
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


def sandbox_uid_processes(uid):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        if str(uid) in uids:
            found.append(pid)
    return found


def test_fork_bomb_is_contained_and_leaves_nothing_behind(sandbox):
    before = sandbox_uid_processes(sandbox.uid) if os.geteuid() == 0 else []
    guarded = run(sandbox, "import os\nwhile True:\n    os.fork()\n")
    assert_not_passed(guarded)  # the audit hook refuses os.fork
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    assert_not_passed(run(sandbox, bomb, guard=False, timeout=2))  # RLIMIT_NPROC + kill of the tree
    assert sandbox.run("def f():\n    return 1\n", TEST, "f").passed  # still usable afterwards
    if os.geteuid() == 0:
        assert sandbox_uid_processes(sandbox.uid) == before  # only the sandbox's server


@pytest.mark.parametrize("code", [
    "x = bytearray(50 * 1024**3)\n",
    "x = []\nwhile True:\n    x.append(' ' * 10**7)\n",
])
def test_memory_bomb(sandbox, code):
    assert_not_passed(run(sandbox, code + WRONG))


def test_infinite_loops_time_out(sandbox):
    assert run(sandbox, "while True:\n    pass\n", timeout=1).result == "timed out"
    ignore = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT):\n"
              "    try:\n        signal.signal(s, signal.SIG_IGN)\n    except ValueError:\n"
              "        pass\nwhile True:\n    time.sleep(0.1)\n")
    assert run(sandbox, ignore, timeout=1).result == "timed out"


def test_killing_other_processes_fails(sandbox):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = Sandbox(SandboxLimits(timeout_s=3.0), slot=7)
    try:
        other.start()
        for attack in ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
                       f"import os\nos.kill({victim.pid}, 9)\n",
                       f"import os\nos.kill({other.proc.pid}, 9)\n",
                       "import os\nos.kill(-1, 9)\n",
                       "import os\nos.killpg(0, 9)\n",
                       "import os\nos.killpg(1, 9)\n"):
            assert_not_passed(run(sandbox, attack + WRONG, guard=False))
        assert victim.poll() is None
        assert other.run("def f():\n    return 1\n", TEST, "f").passed
        assert sandbox.run("def f():\n    return 1\n", TEST, "f").passed
    finally:
        victim.kill()
        victim.wait()
        other.close()


@pytest.mark.parametrize("trick", [
    "import sys\nsys.exit(0)\n",
    "raise SystemExit\n",
    "raise SystemExit(0)\n",
    "import os\nos._exit(0)\n",
    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "import atexit, os\natexit.register(lambda: os._exit(0))\nraise SystemExit(1)\n",
    "import builtins\nbuiltins.AssertionError = type('Quiet', (BaseException,), {})\n",
    "import threading, os\nthreading.Timer(0.01, lambda: os._exit(0)).start()\nimport time\ntime.sleep(1)\n",
    # exit from inside the function under test, i.e. during check()
    "def f():\n    import os\n    os._exit(0)\n",
    "def f():\n    raise SystemExit(0)\n",
    "import _thread\n_thread.interrupt_main()\nimport time\ntime.sleep(1)\n",
])
@pytest.mark.parametrize("guard", [True, False])
def test_exiting_early_is_a_failure(sandbox, trick, guard):
    code = WRONG + trick if trick.startswith("def f") else trick + WRONG
    assert_not_passed(run(sandbox, code, guard))


FORGERIES = [
    # print or write anything that looks like the pass marker, on every fd
    "import os\nfor fd in range(1, 64):\n    try:\n        os.write(fd, b'PASS ' + b'0' * 32)\n"
    "    except OSError:\n        pass\nos._exit(0)\n",
    # look for the nonce in the environment, argv, files, fds and /proc
    "import os, sys\nseen = repr(dict(os.environ)) + repr(sys.argv)\n"
    "for fd in range(64):\n    try:\n        seen += os.read(fd, 4096).decode('latin1')\n"
    "    except OSError:\n        pass\n"
    "for p in ('/proc/self/environ', '/proc/self/cmdline', '/proc/1/cmdline', '/proc/self/mem'):\n"
    "    try:\n        seen += open(p, 'rb').read(4096).decode('latin1')\n    except OSError:\n        pass\n"
    "import re\nfor tok in re.findall('[0-9a-f]{32}', seen):\n    print('PASS ' + tok)\n"
    "    for fd in range(3, 64):\n        try:\n            os.write(fd, ('PASS ' + tok).encode())\n"
    "        except OSError:\n            pass\nos._exit(0)\n",
    # walk frames / the heap to find the harness's locals
    "import sys, os\ntry:\n    f = sys._getframe(0)\nexcept Exception:\n    f = None\n"
    "while f is not None:\n    for v in list(f.f_locals.values()):\n"
    "        if isinstance(v, list):\n            v.append('ok')\n        if isinstance(v, dict) and 'nonce' in v:\n"
    "            print('PASS', v['nonce'])\n    f = f.f_back\nos._exit(0)\n",
    "import sys, os\ntry:\n    raise ValueError\nexcept ValueError as e:\n    tb = e.__traceback__\n"
    "try:\n    f = tb.tb_frame\n    while f is not None:\n        for v in list(f.f_locals.values()):\n"
    "            if isinstance(v, list):\n                v.append('ok')\n        f = f.f_back\n"
    "except Exception:\n    pass\nos._exit(0)\n",
    "import os\ntry:\n    import gc\n    for o in gc.get_objects():\n        if isinstance(o, list):\n"
    "            o.append('ok')\nexcept Exception:\n    pass\nos._exit(0)\n",
    "import os\ntry:\n    import ctypes\nexcept ImportError:\n    pass\nos._exit(0)\n",
    # replace what the harness calls after the sample, hoping to run in the main thread
    "import os, sys\nos.write = lambda fd, data: len(data)\nos._exit = lambda code: None\n"
    "sys.stdout = None\n",
]


@pytest.mark.parametrize("code", [
    "def check(candidate):\n    pass\n",        # the test defines its own check afterwards
    'x = """\n',                                 # try to swallow the test into a string
    "if True:\n    pass\n#",                    # or into a comment / a block
    "import builtins\nbuiltins.__build_class__ = None\nbuiltins.__import__ = None\n",
])
def test_a_completion_cannot_disable_the_tests(sandbox, code):
    assert_not_passed(run(sandbox, WRONG + code))


def test_patched_builtins_do_not_reach_the_tests(sandbox):
    test = ("def check(candidate):\n    assert abs(candidate() - 1.0) < 1e-6\n"
            "    assert len([candidate()]) == 1 and isinstance(candidate(), float)\n")
    patch = ("import builtins\nbuiltins.abs = lambda x: 0\n"
             "builtins.isinstance = lambda *a: True\n")
    assert sandbox.run("def f():\n    return 1.0\n", test, "f").passed
    assert_not_passed(sandbox.run(patch + "def f():\n    return 2\n", test, "f"))


@pytest.mark.parametrize("code", FORGERIES)
def test_the_pass_marker_cannot_be_forged(sandbox, code):
    assert_not_passed(run(sandbox, code + WRONG))


def test_output_flood_is_bounded(sandbox):
    result = run(sandbox, "while True:\n    print('x' * 100000)\n", timeout=5)
    assert_not_passed(result)
    assert len(result.output) <= 4000
    err = run(sandbox, "import sys\nwhile True:\n    sys.stderr.write('y' * 100000)\n", timeout=5)
    assert_not_passed(err)


def test_samples_do_not_run_as_root(sandbox):
    code = "import os\nassert os.getuid() != 0 and os.geteuid() != 0\ndef f():\n    return 1\n"
    assert sandbox.run(code, TEST, "f").passed


def test_unsafe_mode_still_scores_and_drops_root():
    with Sandbox(SandboxLimits(timeout_s=3.0), unsafe=True) as sb:
        code = "import os\nassert os.getuid() != 0\ndef f():\n    return 1\n"
        assert sb.run(code, TEST, "f").passed
        assert sb.run(WRONG, TEST, "f").result == "failed: assertion"
        assert sb.run("while True:\n    pass\n", TEST, "f", timeout_s=1).result == "timed out"


def test_many_processes_cannot_add_up_to_the_hosts_memory():
    limits = SandboxLimits(timeout_s=3.0, sandbox_memory_bytes=384 * 1024**2)
    with Sandbox(limits, slot=9) as sb:
        sb.start()
        if sb._cgroups is None:
            pytest.skip("memory cgroups need root and a writable cgroup v1 hierarchy")
        bomb = ("import os\nfor i in range(6):\n    if os.fork() == 0:\n        break\n"
                "x = bytearray(200 * 1024**2)\nfor i in range(0, len(x), 4096):\n    x[i] = 1\n")
        assert_not_passed(run(sb, bomb + WRONG, guard=False))
        peak = int((sb._cgroups.dirs[0] / "memory.max_usage_in_bytes").read_text())
        assert peak <= limits.sandbox_memory_bytes
        assert sb.run("def f():\n    return 1\n", TEST, "f").passed
        dirs = sb._cgroups.dirs
    assert not any(d.exists() for d in dirs)  # removed with the sandbox
