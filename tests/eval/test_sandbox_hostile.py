"""Hostile samples are contained, scored as failures or time-outs, and the host is unchanged.

Every sample here answers wrongly (f() returns 2, the test wants 1): only a trick could make it
pass. The tricks target the verdict (forged passes) and the host (escapes); see also
test_sandbox_teardown.py (FIFOs, Ctrl-C, a killed scorer, a scorer that is not root).
"""

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


def run(sb, code, timeout=None):
    return sb.run(code if "def f" in code else code + WRONG, TEST, "f", timeout_s=timeout)


def assert_not_passed(result):
    assert not result.passed, result
    assert result.result == "timed out" or result.result.startswith("failed"), result


def test_a_correct_sample_passes_and_a_wrong_one_fails(sandbox):
    assert sandbox.run("def f():\n    return 1\n", TEST, "f").passed
    assert sandbox.run(WRONG, TEST, "f").result == "failed: assertion"
    assert sandbox.run("def f(:\n", TEST, "f").result.startswith("failed: syntax error")
    assert sandbox.run("def f():\n    return 1/0\n", TEST, "f").result.startswith(
        "failed: exception: ZeroDivisionError")
    printed = sandbox.run("print('hello')\ndef f():\n    return 1\n", TEST, "f")
    assert printed.passed and printed.output == "hello\n"


# -- forged passes: replacing what the harness uses -------------------------------------------
# Both forged passes that once worked: the harness exec'd the tests with the exec the sample had
# replaced; a sub-interpreter, beyond the audit hook, found the secret in the harness's frames
# and wrote the pass line itself.
EXEC_FORGERY = ("import builtins\n"
                "builtins.exec = lambda code, ns=None, *a: ns.update(check=lambda c: None)\n")
SUBINTERPRETER = (
    "import importlib\nsource = '''\nimport ctypes, os, sys\nos.system('echo PASS from sh')\n"
    "for frame in sys._current_frames().values():\n    while frame is not None:\n"
    "        loc = frame.f_locals\n        if 'nonce' in loc and 'report_w' in loc:\n"
    "            os.write(loc['report_w'], ('PASS ' + loc['nonce']).encode())\n"
    "            ctypes.CDLL(None)._exit(0)\n        frame = frame.f_back\n"
    "for fd in range(1, 64):\n    try:\n        os.write(fd, b'ok')\n    except OSError:\n"
    "        pass\nctypes.CDLL(None)._exit(0)\n'''\n"
    "for name in ('_xxsubinterpreters', '_interpreters', 'concurrent.interpreters'):\n"
    "    try:\n        m = importlib.import_module(name)\n    except ImportError:\n        continue\n"
    "    if hasattr(m, 'run_string'):\n        m.run_string(m.create(), source)\n"
    "    else:\n        m.create().exec(source)\n")

PATCHES = [
    EXEC_FORGERY,
    EXEC_FORGERY.replace("import builtins\nbuiltins", "import __main__\n__main__"),
    "import builtins\nfor n in ('exec', 'compile', 'AssertionError', 'isinstance', 'len', 'abs',"
    " '__build_class__', '__import__'):\n    setattr(builtins, n, lambda *a, **k: True)\n",
    # every function of every loaded module the harness might call: json, os, the judge's own
    "import sys\nfor name, mod in list(sys.modules.items()):\n"
    "    for attr in ('judge_main', 'receive', 'send', 'verdict', 'write', '_exit', 'loads',"
    " 'dumps', 'decode_answer', 'read_exact'):\n        try:\n"
    "            setattr(mod, attr, lambda *a, **k: None)\n        except Exception:\n"
    "            pass\n",
    "import sys\nsp = sys.modules['sandbox_python']\nsp.Judge.verdict = lambda self, text: None\n"
    "sp.decode_answer = lambda *a: 1\nsp.judge_main = lambda *a: None\n"
    "sys.modules['sandbox_server'] = None\n",
    SUBINTERPRETER,
]


@pytest.mark.parametrize("code", PATCHES)
def test_replacing_builtins_the_harness_or_the_interpreter_does_not_pass(sandbox, code):
    assert_not_passed(run(sandbox, code))


def test_sub_interpreters_ctypes_and_a_shell_run_but_cannot_pass(sandbox):
    result = run(sandbox, SUBINTERPRETER)
    assert_not_passed(result)
    if sys.version_info < (3, 13):  # they did run: nothing is blocked, the verdict is elsewhere
        assert "PASS from sh" in result.output


@pytest.mark.parametrize("value", [
    # objects whose comparisons always succeed, plain or disguised as plain types
    "class A:\n    def __eq__(self, o):\n        return True\n    __hash__ = None\nV = A()\n",
    "class A(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
    "V = A(2)\n",
    "class A(list):\n    def __eq__(self, o):\n        return True\nV = A([2])\n",
    "class A(str):\n    def __eq__(self, o):\n        return True\n    __hash__ = str.__hash__\n"
    "V = A('2')\n",
    "class A:\n    def __eq__(self, o):\n        return True\n    def __sub__(self, o):\n"
    "        return 0\n    __rsub__ = __sub__\n    def __bool__(self):\n        return True\nV = A()\n",
])
def test_objects_that_fool_comparisons_do_not_pass(sandbox, value):
    tests = ["def check(candidate):\n    assert candidate() == 1\n",
             "def check(candidate):\n    assert candidate() == [1]\n",
             "def check(candidate):\n    assert abs(candidate() - 1) < 1e-6\n",
             "def check(candidate):\n    assert candidate()\n    assert not candidate()\n"]
    for test in tests:
        assert_not_passed(sandbox.run(value + "def f():\n    return V\n", test, "f"))


# -- forged passes: the secret, frames, memory, other processes ---------------------------------
FORGERIES = [
    # print or write anything that looks like a pass, on every fd
    "import os\nfor fd in range(1, 64):\n    try:\n        os.write(fd, b'ok')\n"
    "        os.write(fd, b'PASS ' + b'0' * 32)\n    except OSError:\n        pass\nos._exit(0)\n",
    # well-formed answers written ahead of the questions, and garbage
    "import os, json, struct\nd = json.dumps(['ok', 1, []]).encode()\nfor fd in range(3, 64):\n"
    "    try:\n        os.write(fd, struct.pack('>I', len(d)) + d)\n    except OSError:\n"
    "        pass\n",
    "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\x00\\x00\\x00\\x05[[[[[' * 99)\n"
    "    except OSError:\n        pass\n",
    # /proc of the server, the judge, ourselves
    "import os\nfor pid in ('1', 'self', '2', '3', '4'):\n    for f in ('mem', 'environ', 'cmdline', 'maps'):\n"
    "        try:\n            print(open(f'/proc/{pid}/{f}', 'rb').read(100))\n"
    "        except OSError:\n            pass\n",
    # walk frames and the heap for the harness's state
    "import sys, os\nf = sys._getframe(0)\nwhile f is not None:\n"
    "    for v in list(f.f_locals.values()):\n        if isinstance(v, list):\n"
    "            v.append('ok')\n    f = f.f_back\nos._exit(0)\n",
    "import gc, os\nfor o in gc.get_objects():\n    if isinstance(o, list):\n        o.append('ok')\n"
    "os._exit(0)\n",
    # ptrace or read the memory of every other process (server, judge); -1 stops them all
    "import ctypes, os, threading\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "mine = {os.getpid()} | {t.native_id for t in threading.enumerate()}\n"
    "for pid in range(1, 300):\n    if pid not in mine and libc.ptrace(16, pid, 0, 0) == 0:\n"
    "        print('attached', pid)\n",
    "import os, signal\nfor pid in range(1, 300):\n    for s in (signal.SIGINT, signal.SIGUSR1):\n"
    "        try:\n            os.kill(pid, s)\n        except OSError:\n            pass\n",
    "import os, signal\nos.kill(-1, signal.SIGSTOP)\n",
    # the channels: close them, or keep them and never answer
    "import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n    except OSError:\n"
    "        pass\nimport time\ntime.sleep(0.5)\n",
]


@pytest.mark.parametrize("code", FORGERIES)
def test_the_verdict_cannot_be_forged(sandbox, code):
    result = run(sandbox, code, timeout=2)
    assert_not_passed(result)
    assert "attached" not in result.output


def test_the_sample_cannot_read_the_tests_or_the_judge(sandbox):
    """The tests never enter the sample's memory, fds or filesystem; the judge's memory is
    out of reach. A sample that found the expected value would return it and pass."""
    secret = "assert candidate() == 'x7Q%s'" % os.getpid()
    test = "def check(candidate):\n    " + secret + "\n"
    hunt = (
        "import gc, os, ctypes, re, threading\npattern = re.compile('x7' + 'Q' + '[0-9]+')\n"
        "texts = []\nfor o in gc.get_objects():\n"
        "    items = list(o.values()) if isinstance(o, dict) else list(o) if isinstance(o, "
        "(list, tuple)) else []\n"
        "    texts += [str(v) for v in items if isinstance(v, (str, bytes))]\n"
        "import select\nfor fd in range(64):\n    try:\n"
        "        if select.select([fd], [], [], 0)[0]:\n"
        "            texts.append(os.read(fd, 1 << 20).decode('latin1'))\n"
        "    except OSError:\n        pass\n"
        "libc = ctypes.CDLL(None)\nclass V(ctypes.Structure):\n"
        "    _fields_ = [('b', ctypes.c_void_p), ('n', ctypes.c_size_t)]\n"
        "buf = ctypes.create_string_buffer(1 << 16)\nmine = {os.getpid()} | "
        "{t.native_id for t in threading.enumerate()}\n"
        "for pid in range(1, 300):\n    if pid in mine:\n        continue\n"
        "    for base in range(0x400000, 0x800000, 1 << 16):\n"
        "        loc, rem = V(ctypes.addressof(buf), 1 << 16), V(base, 1 << 16)\n"
        "        if libc.process_vm_readv(pid, ctypes.byref(loc), 1, ctypes.byref(rem), 1, 0) > 0:\n"
        "            texts.append(buf.raw.decode('latin1'))\n"
        "answers = [a for t in texts for a in pattern.findall(t)]\nprint('found', answers)\n"
        "def f():\n    return answers[0] if answers else None\n")
    result = sandbox.run(hunt, test, "f", timeout_s=5)
    assert_not_passed(result)
    assert "found []" in result.output, result


@pytest.mark.parametrize("trick", [
    "import sys\nsys.exit(0)\n",
    "raise SystemExit\n",
    "import os\nos._exit(0)\n",
    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "import atexit, os\natexit.register(lambda: os._exit(0))\nraise SystemExit(1)\n",
    "import threading, os\nthreading.Timer(0.01, lambda: os._exit(0)).start()\nimport time\n"
    "time.sleep(1)\n",
    "import _thread\n_thread.interrupt_main()\nimport time\ntime.sleep(1)\n",
    # exit from inside the function under test, i.e. during check()
    "def f():\n    import os\n    os._exit(0)\n",
    "def f():\n    raise SystemExit(0)\n",
    "def f():\n    raise KeyboardInterrupt\n",
    "def f():\n    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n",
])
def test_exiting_early_is_a_failure(sandbox, trick):
    assert_not_passed(run(sandbox, trick))


@pytest.mark.parametrize("code", [
    "def check(candidate):\n    pass\n",        # the test defines its own check afterwards
    'x = """\n',                                 # try to swallow the test into a string
    "if True:\n    pass\n#",                    # or into a comment / a block
])
def test_a_completion_cannot_disable_the_tests(sandbox, code):
    assert_not_passed(sandbox.run(WRONG + code, TEST, "f"))


def test_exceptions_cross_as_builtin_types_and_tests_may_catch_them(sandbox):
    test = ("def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError as e:\n"
            "        assert 'negative' in str(e)\n    else:\n        assert False\n"
            "    assert candidate(4) == 2\n")
    good = ("class Negative(ValueError):\n    pass\n"
            "def f(x):\n    if x < 0:\n        raise Negative('negative input')\n"
            "    return int(x ** 0.5)\n")
    assert sandbox.run(good, test, "f").passed
    assert_not_passed(sandbox.run("def f(x):\n    return 2\n", test, "f"))


# -- escapes: files, network, processes, resources ---------------------------------------------
def test_files_outside_the_sample_directory_survive(sandbox):
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
            f"try:\n    open({str(host_dir / 'new.txt')!r}, 'w').write('x')\n"
            "except OSError:\n    pass\n")
        assert_not_passed(run(sandbox, code))
        assert [c.read_text() for c in canaries] == ["alive", "alive"]
        assert sorted(p.name for p in host_dir.iterdir()) == ["canary.txt"]
    finally:
        for c in canaries:
            c.unlink(missing_ok=True)
        host_dir.rmdir()


def test_home_directories_and_data_are_not_visible(sandbox):
    """The sample sees system directories only: not a home, not the repository, not data."""
    canary = Path.home() / f".codegemma-secret-{os.getpid()}"
    canary.write_text("1")
    repo_file = Path(__file__).resolve()
    try:
        for path in (canary, repo_file, "/root", "/home", "/work", "/var/lib", "/srv", "/mnt"):
            code = (f"import os\ndef f():\n    p = {str(path)!r}\n"
                    "    return 1 if os.path.exists(p) else 2\n")
            assert_not_passed(sandbox.run(code, TEST, "f"))
        visible = ("import os\ndef f():\n    return int(all(os.path.isdir(p) for p in "
                   "('/usr/bin', '/etc', '/tmp')) and os.path.exists('/bin/sh'))\n")
        assert sandbox.run(visible, TEST, "f").passed  # the control: existing paths are seen
    finally:
        canary.unlink()


def test_unix_sockets_of_the_host_are_unreachable(sandbox):
    where = [Path(tempfile.mkdtemp(dir=d)) for d in (Path.home(), "/var/tmp")]
    listeners = []
    try:
        for d in where:
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(d / "s"))
            s.listen(1)
            s.settimeout(0.3)
            listeners.append(s)
        abstract = socket.socket(socket.AF_UNIX)
        abstract.bind(f"\0codegemma-test-{os.getpid()}")
        abstract.listen(1)
        abstract.settimeout(0.3)
        listeners.append(abstract)
        paths = [str(d / "s") for d in where] + [f"\0codegemma-test-{os.getpid()}"]
        code = ("import socket\ndef f():\n    for p in %r:\n        s = socket.socket(socket.AF_UNIX)\n"
                "        try:\n            s.connect(p)\n            return 1\n"
                "        except OSError:\n            pass\n    return 2\n") % (paths,)
        assert sandbox.run(code, TEST, "f").result == "failed: assertion"
        for s in listeners:
            with pytest.raises(socket.timeout):
                s.accept()
    finally:
        for s in listeners:
            s.close()
        for d in where:
            (d / "s").unlink(missing_ok=True)
            d.rmdir()


def test_network_is_unreachable(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = ("import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n" + WRONG)
    try:
        result = sandbox.run(code, TEST, "f")
        assert_not_passed(result)
        assert "Error" in result.result  # connection refused / unreachable, not an assertion
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


def sandbox_processes(*uids):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        ids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        if any(str(uid) in ids for uid in uids):
            found.append(pid)
    return found


def test_fork_bomb_is_contained_and_leaves_nothing_behind(sandbox):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    assert_not_passed(run(sandbox, bomb, timeout=2))  # RLIMIT_NPROC + kill of the tree
    assert sandbox.run("def f():\n    return 1\n", TEST, "f").passed  # still usable afterwards
    if os.geteuid() == 0:
        assert sandbox_processes(sandbox.uid, sandbox.judge_uid) == []


@pytest.mark.parametrize("code", [
    "x = bytearray(50 * 1024**3)\n",
    "x = []\nwhile True:\n    x.append(' ' * 10**7)\n",
    "def f():\n    return [0] * (10**8)\n",   # an answer too large to send
])
def test_memory_bomb(sandbox, code):
    assert_not_passed(run(sandbox, code))


def test_infinite_loops_time_out(sandbox):
    assert run(sandbox, "while True:\n    pass\n", timeout=1).result == "timed out"
    assert run(sandbox, "def f():\n    while True:\n        pass\n", timeout=1).result == "timed out"
    ignore = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT):\n"
              "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.1)\n")
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
                       "import os\nos.kill(1, 2)\nos.kill(1, 9)\n",
                       "import os\nos.killpg(1, 9)\n"):
            assert_not_passed(run(sandbox, attack))
        assert victim.poll() is None
        assert other.run("def f():\n    return 1\n", TEST, "f").passed
        assert sandbox.run("def f():\n    return 1\n", TEST, "f").passed
    finally:
        victim.kill()
        victim.wait()
        other.close()


def test_output_flood_is_bounded(sandbox):
    result = run(sandbox, "while True:\n    print('x' * 100000)\n", timeout=5)
    assert_not_passed(result)
    assert len(result.output) <= 4000
    assert_not_passed(run(sandbox, "import sys\nwhile True:\n    sys.stderr.write('y' * 100000)\n",
                          timeout=5))


def test_samples_and_judges_do_not_run_as_root(sandbox):
    code = "import os\nassert os.getuid() != 0 and os.geteuid() != 0\ndef f():\n    return 1\n"
    assert sandbox.run(code, TEST, "f").passed
    regain = ("import os\ndef f():\n    for become in (lambda: os.setresuid(0, 0, 0),\n"
              "                   lambda: os.setuid(%d), lambda: os.setgroups([0])):\n"
              "        try:\n            become()\n            return 2\n"
              "        except PermissionError:\n            pass\n    return 1\n")
    assert sandbox.run(regain % (sandbox.judge_uid if sandbox.judge_uid > 0 else 0), TEST,
                       "f").passed  # no capability left to become root or the judge
    if os.geteuid() == 0:
        assert sandbox.uid != sandbox.judge_uid  # the sample cannot signal or trace its judge


def test_unsafe_mode_still_scores_and_drops_root():
    with Sandbox(SandboxLimits(timeout_s=3.0), unsafe=True) as sb:
        code = "import os\nassert os.getuid() != 0\ndef f():\n    return 1\n"
        assert sb.run(code, TEST, "f").passed
        assert sb.run(WRONG, TEST, "f").result == "failed: assertion"
        assert sb.run("while True:\n    pass\n", TEST, "f", timeout_s=1).result == "timed out"
        assert_not_passed(sb.run(PATCHES[0] + WRONG, TEST, "f"))


# -- other languages: sample and test are one program ------------------------------------------
DISABLED_ASSERTS = {  # a wrong body, then code that would switch the tests' checks off
    "cpp": ["    return true;\n}\n#define assert(x) ((void)0)\n",
            "    return true;\n}\n# /* */ define \\\n assert(x) ((void)0)\n",
            "    return true;\n}\n#define NDEBUG\n#undef assert\n#include <cassert>\n",
            "    return true;\n}\n#define false true\n"],
    "js": ["  return true;\n}\nconsole.assert = () => {};\n",
           "  return true;\n}\nvar console = {assert() {}, log() {}};\n",
           "  return true;\n}\nObject.defineProperty(console, 'assert', {value: () => {}});\n"],
}


@pytest.mark.parametrize("language", sorted(DISABLED_ASSERTS))
def test_a_sample_cannot_switch_off_the_tests_of_its_program(language, data_dir):
    from codegemma.eval import harness
    from codegemma.eval.registry import get_benchmark
    bench = get_benchmark(f"humaneval-x-{language}")
    if bench.runnable() or not bench.data_present(data_dir):
        pytest.skip(f"{bench.name}: {bench.runnable() or 'no data'}")
    problems = bench.problems(data_dir)
    task = problems[0]  # has_close_elements: returning true always is wrong
    samples = [{"task_id": task.task_id, "completion": c} for c in DISABLED_ASSERTS[language]]
    samples.append({"task_id": task.task_id, "completion": task.canonical_solution})
    results = harness.score(bench, problems, samples, timeout_s=bench.timeout_s, progress=False)
    assert [r["passed"] for r in results] == [False] * (len(samples) - 1) + [True], results
