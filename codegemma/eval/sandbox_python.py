"""A Python sample's test as two processes: the sample's and the judge's (standard library only).

Runs inside the sandbox, imported by `sandbox_server.py`. The sample's process executes the
completion and then only answers calls. The judge's process executes the benchmark's own code
(its tests, and definitions the completion cannot change) and never a line the sample wrote:
the tests reach the sample's functions through `Remote` proxies that send the arguments over a
pipe and get back *plain data* (exact int, float, bool, str, None, bytes, complex, and list,
tuple, set, frozenset, dict of those), decoded by `decode_answer` with bounded depth and size.
Anything else the sample returns stays in its process; the judge holds an opaque `Remote` for
it that can be called or passed back, equals only itself, and has no truth value. So no object
of the sample's runs code in the judge (no `__eq__` that is always true, no patched builtins,
no frames to walk), and the verdict is the judge's alone, written on a pipe the sample never
holds. Exceptions raised by the sample's functions cross as the nearest built-in exception
type and its message; an exit, a crash, a closed channel or a malformed answer during a call
fails the sample at once, out of the reach of the tests' own `try` blocks.

Wire format: frames of a 4-byte big-endian length and JSON. Values are JSON scalars, or arrays
whose first item is a tag: "l" list, "t" tuple, "s" set, "F" frozenset, "d" dict (flat key,
value pairs), "b" bytes (latin-1 text), "c" complex, "y" a built-in type of plain data (MBPP/533
passes `int`), "h" a sample object kept in the sample's
process (index, type name), "r" a reference the judge passes back (["n", name] or ["i", index]).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import resource
import signal
import struct
import sys

MAX_FRAME = 32 * 1024 * 1024   # bytes of one answer from the sample
MAX_DEPTH = 100                # nesting of one value
MAX_ITEMS = 2_000_000          # scalars and containers in one answer
MESSAGE_CHARS = 500            # of an exception message or a load error
SAMPLE_STACK = 64 * 1024 * 1024  # deep recursion in samples

CONTAINER_TAGS = {"l": list, "t": tuple, "s": set, "F": frozenset}
SCALARS = (int, float, bool, str)
# Types that may cross by name: the plain data types themselves (tests pass e.g. `int` as an argument).
PLAIN_TYPES = {t.__name__: t for t in (int, float, bool, str, list, tuple, set, frozenset, dict, bytes, complex,
                                       type(None))}


def plain_type_name(value) -> str | None:
    """The name of `value` when it is one of PLAIN_TYPES itself (by identity: no comparison runs)."""
    if type(value) is type:
        for name, t in PLAIN_TYPES.items():
            if value is t:
                return name
    return None


class ProtocolError(Exception):
    """The sample's process sent something that is not a well-formed answer."""


# -- frames ------------------------------------------------------------------------------------
def read_exact(fd: int, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def send(fd: int, obj) -> None:
    data = json.dumps(obj, allow_nan=True).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def receive(fd: int, limit: int = MAX_FRAME):
    size = struct.unpack(">I", read_exact(fd, 4))[0]
    if size > limit:
        raise ProtocolError(f"an answer of {size} bytes (the limit is {limit})")
    try:
        return json.loads(read_exact(fd, size))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"an answer that is not JSON ({type(exc).__name__})") from None


# -- the judge's side ----------------------------------------------------------------------------
class Remote:
    """A function or object that lives in the sample's process. Calling it, reading or setting
    an attribute, are requests to that process; it equals only itself and has no truth value."""
    __slots__ = ("_judge", "_ref", "_label")

    def __init__(self, judge: "Judge", ref: list, label: str):
        object.__setattr__(self, "_judge", judge)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_label", label)

    def __call__(self, *args, **kwargs):
        return self._judge.call(self._ref, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._judge.request(["getattr", self._ref, name])

    def __setattr__(self, name: str, value) -> None:
        self._judge.request(["setattr", self._ref, name, encode(value)])

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} is not plain data and has no truth value here")

    def __repr__(self) -> str:
        return f"<the sample's {self._label}>"


def encode(value, depth: int = 0):
    """A value of the tests, for the sample: plain data and `Remote`s only (exact types)."""
    kind = type(value)
    if value is None or kind in SCALARS:
        return value
    if depth > MAX_DEPTH:
        raise ValueError("a value nested too deeply to pass to the sample")
    if kind is Remote:
        return ["r", value._ref]
    for tag, container in CONTAINER_TAGS.items():
        if kind is container:
            return [tag, *(encode(v, depth + 1) for v in value)]
    if kind is dict:
        out = ["d"]
        for k, v in value.items():
            out += [encode(k, depth + 1), encode(v, depth + 1)]
        return out
    if kind is bytes:
        return ["b", value.decode("latin-1")]
    if kind is complex:
        return ["c", value.real, value.imag]
    if plain_type_name(value) is not None:
        return ["y", plain_type_name(value)]
    raise TypeError(f"the tests pass a {kind.__name__} to the sample; only plain data can cross")


def decode_answer(value, judge: "Judge", budget: list, depth: int = 0):
    """The strict decoder of what the sample sends: exact plain types, bounded, or `Remote`."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ProtocolError("an answer with too many items")
    kind = type(value)
    if value is None or kind in SCALARS:
        return value
    if kind is not list or not value or type(value[0]) is not str or depth > MAX_DEPTH:
        raise ProtocolError("a malformed value")
    tag, items = value[0], value[1:]
    if tag in CONTAINER_TAGS:
        decoded = [decode_answer(v, judge, budget, depth + 1) for v in items]
        try:
            return CONTAINER_TAGS[tag](decoded)
        except TypeError:  # an unhashable item in a set
            raise ProtocolError("a set with an unhashable item") from None
    if tag == "d" and len(items) % 2 == 0:
        pairs = [decode_answer(v, judge, budget, depth + 1) for v in items]
        try:
            return dict(zip(pairs[::2], pairs[1::2]))
        except TypeError:
            raise ProtocolError("a dict with an unhashable key") from None
    if tag == "b" and len(items) == 1 and type(items[0]) is str:
        try:
            return items[0].encode("latin-1")
        except UnicodeEncodeError:
            raise ProtocolError("malformed bytes") from None
    if tag == "c" and len(items) == 2 and all(type(x) in (int, float) for x in items):
        return complex(items[0], items[1])
    if tag == "y" and len(items) == 1 and type(items[0]) is str and items[0] in PLAIN_TYPES:
        return PLAIN_TYPES[items[0]]
    if (tag == "h" and len(items) == 2 and type(items[0]) is int and type(items[1]) is str):
        return Remote(judge, ["i", items[0]], items[1][:80] + " object")
    raise ProtocolError(f"a value with an unknown tag {tag[:20]!r}")


def builtin_exception(name) -> type:
    """The built-in exception class called `name`; any other name becomes Exception."""
    cls = getattr(builtins, name, None) if type(name) is str else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return Exception


class Judge:
    """The judge's end of the channel. Any failure of the sample's process during a request
    ends the judge with a failed verdict: the tests never see it, so they cannot catch it."""

    def __init__(self, to_sample: int, from_sample: int, report: int):
        self.to_sample, self.from_sample, self.report = to_sample, from_sample, report
        self.loaded = False

    def await_load(self) -> None:
        """The sample's process first says whether its code ran ("ready") or why not. Read
        lazily, after the first request is on its way: the two processes start in parallel."""
        if self.loaded:
            return
        first = self.answer()
        if first != ["ready"]:
            text = first[1] if type(first) is list and len(first) == 2 \
                and type(first[1]) is str else "the sample's process sent a malformed reply"
            self.verdict(f"failed: {text[:MESSAGE_CHARS]}")
        self.loaded = True

    def verdict(self, text: str) -> None:
        os.write(self.report, text.encode("utf-8", "replace")[:1000])
        os._exit(0)

    def answer(self):
        try:
            return receive(self.from_sample)
        except (EOFError, OSError):
            self.verdict("failed: sample ended")
        except ProtocolError as exc:
            self.verdict(f"failed: the sample's process sent {exc}")

    def request(self, message: list, args: tuple = (), kwargs: dict | None = None):
        try:
            send(self.to_sample, message)
        except OSError:  # it ended: after saying why, perhaps (a syntax error)
            self.await_load()
            self.verdict("failed: sample ended")
        self.await_load()
        reply = self.answer()
        if type(reply) is not list or not reply or type(reply[0]) is not str:
            self.verdict("failed: the sample's process sent a malformed reply")
        kind = reply[0]
        if kind == "ok" and len(reply) == 3 and type(reply[2]) is list:
            budget = [MAX_ITEMS]
            try:
                result = decode_answer(reply[1], self, budget)
                self.copy_back(reply[2], args, kwargs or {}, budget)
            except ProtocolError as exc:
                self.verdict(f"failed: the sample's process sent {exc}")
            return result
        if kind == "raise" and len(reply) == 3 and all(type(x) is str for x in reply[1:]):
            raise builtin_exception(reply[1])(reply[2][:MESSAGE_CHARS])
        if kind == "exit" and len(reply) == 2 and type(reply[1]) is str:
            self.verdict(f"failed: {reply[1][:MESSAGE_CHARS]}")
        self.verdict("failed: the sample's process sent a malformed reply")

    def call(self, ref: list, args: tuple, kwargs: dict):
        message = ["call", ref, [encode(a) for a in args], encode(kwargs)]
        return self.request(message, args, kwargs)

    def copy_back(self, changed: list, args: tuple, kwargs: dict, budget: list) -> None:
        """Arguments the sample's function changed in place (lists, dicts, sets), changed here
        too, as they would be in one process."""
        for item in changed:
            if type(item) is not list or len(item) != 2:
                raise ProtocolError("a malformed changed argument")
            key, value = item
            if type(key) is int and 0 <= key < len(args):
                target = args[key]
            elif type(key) is str and key in kwargs:
                target = kwargs[key]
            else:
                raise ProtocolError("a changed argument that was not passed")
            new = decode_answer(value, self, budget)
            if type(new) is not type(target) or type(target) not in (list, dict, set):
                raise ProtocolError("a changed argument of another type")
            if target != new:
                if type(target) is list:
                    target[:] = new
                else:
                    target.clear()
                    target.update(new)


def judge_main(spec: dict, to_sample: int, from_sample: int, report: int) -> None:
    """Run the benchmark's tests against the sample; never returns. `spec`: context (benchmark
    code), test, remote (names the tests look up in the sample), check (entry point or None)."""
    # No handler of ours may run at a moment a signal chooses (a KeyboardInterrupt inside a
    # test's try block): every signal now kills the judge, which can only fail the sample.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a closed channel is an error, not a death
    judge = Judge(to_sample, from_sample, report)
    namespace = {"__name__": "__judge__", "__builtins__": builtins}
    try:
        exec(compile(spec["context"], "<benchmark>", "exec"), namespace)
        for name in spec["remote"]:
            namespace[name] = Remote(judge, ["n", name], name)
        exec(compile(spec["test"], "<test>", "exec"), namespace)
        if spec.get("check"):
            namespace["check"](namespace[spec["check"]])
    except AssertionError as exc:
        judge.verdict(f"failed: assertion{': ' + str(exc)[:200] if str(exc) else ''}")
    except SyntaxError as exc:
        judge.verdict(f"failed: the benchmark's test does not compile: {exc}")
    except BaseException as exc:  # the tests' verdict on what the sample's functions did
        judge.verdict(f"failed: exception: {type(exc).__name__}: {str(exc)[:200]}")
    judge.await_load()  # a test that called nothing still needs a sample that ran
    judge.verdict("ok")


# -- the sample's side ---------------------------------------------------------------------------
class Exporter:
    """Turns the sample's values into wire values. Subclasses of plain types become their base
    type; anything else stays here, kept by index, and crosses as a handle."""

    def __init__(self):
        self.kept: list = []

    def export(self, value, depth: int = 0):
        kind = type(value)
        if value is None or kind in SCALARS:
            return value
        if depth > MAX_DEPTH:
            raise ValueError("a value nested too deeply to return")
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int.__int__(value)
        if isinstance(value, float):
            return float.__float__(value)
        if isinstance(value, str):
            return str.__str__(value)
        for tag, container in CONTAINER_TAGS.items():
            if isinstance(value, container):
                return [tag, *(self.export(v, depth + 1) for v in value)]
        if isinstance(value, dict):
            out = ["d"]
            for k, v in dict.items(value):
                out += [self.export(k, depth + 1), self.export(v, depth + 1)]
            return out
        if isinstance(value, (bytes, bytearray)):
            return ["b", bytes(value).decode("latin-1")]
        if isinstance(value, complex):
            return ["c", value.real, value.imag]
        if plain_type_name(value) is not None:
            return ["y", plain_type_name(value)]
        self.kept.append(value)
        return ["h", len(self.kept) - 1, type(value).__name__]

    def resolve(self, value, namespace: dict):
        """A value sent by the judge (trusted, well formed) as an object of this process."""
        if type(value) is not list:
            return value
        tag, items = value[0], value[1:]
        if tag in CONTAINER_TAGS:
            return CONTAINER_TAGS[tag](self.resolve(v, namespace) for v in items)
        if tag == "d":
            pairs = [self.resolve(v, namespace) for v in items]
            return dict(zip(pairs[::2], pairs[1::2]))
        if tag == "b":
            return items[0].encode("latin-1")
        if tag == "c":
            return complex(*items)
        if tag == "y":
            return PLAIN_TYPES[items[0]]
        kind, key = items[0]
        if kind == "n":
            if key not in namespace:
                raise NameError(f"name {key!r} is not defined")
            return namespace[key]
        return self.kept[key]


def exception_reply(exc: BaseException) -> list:
    base = next(c for c in type(exc).__mro__ if c.__module__ == "builtins")
    return ["raise", base.__name__, message_of(exc)]


def message_of(exc: BaseException) -> str:
    try:
        return str(exc)[:MESSAGE_CHARS]
    except Exception:  # the sample's own __str__ failed: its message is not needed
        return ""


def serve(exporter: Exporter, namespace: dict, requests: int, replies: int) -> None:
    while True:
        try:
            message = receive(requests, limit=1 << 62)
        except EOFError:
            return
        op, ref = message[0], message[1]
        try:
            target = exporter.resolve(["r", ref], namespace)
            changed = []
            if op == "call":
                args = [exporter.resolve(a, namespace) for a in message[2]]
                kwargs = exporter.resolve(message[3], namespace)
                result = target(*args, **kwargs)
                mutable = [(i, a) for i, a in enumerate(args) if type(a) in (list, dict, set)]
                mutable += [(k, v) for k, v in kwargs.items() if type(v) in (list, dict, set)]
                changed = [[key, exporter.export(arg)] for key, arg in mutable]
            elif op == "getattr":
                result = getattr(target, message[2])
            else:
                result = setattr(target, message[2], exporter.resolve(message[3], namespace))
            reply = ["ok", exporter.export(result), changed]
        except SystemExit as exc:
            reply = ["exit", f"exited early (SystemExit {exc.code!r} during a call)"]
        except Exception as exc:
            reply = exception_reply(exc)
        except BaseException as exc:
            reply = ["exit", f"exception: {type(exc).__name__} during a call"]
        send(replies, reply)
        if reply[0] == "exit":
            return


def sample_main(code: str, requests: int, replies: int) -> None:
    """Run the sample's code, then answer the judge's requests until it is done."""
    # Unbuffered: the process ends with os._exit, which flushes nothing.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    # Deep recursion: the main thread's stack may grow to SAMPLE_STACK (its growth is checked
    # against the limit in force when it grows).
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    stack = SAMPLE_STACK if hard == resource.RLIM_INFINITY else min(SAMPLE_STACK, hard)
    resource.setrlimit(resource.RLIMIT_STACK, (stack, hard))
    namespace = {"__name__": "__sample__", "__builtins__": builtins}
    try:
        program = compile(code, "<sample>", "exec")
    except (SyntaxError, ValueError) as exc:  # ValueError: a null byte in the source
        send(replies, ["error", f"syntax error: {exc}"[:MESSAGE_CHARS]])
        os._exit(0)
    try:
        exec(program, namespace)
    except SystemExit as exc:
        send(replies, ["error", f"exited early (SystemExit {exc.code!r})"[:MESSAGE_CHARS]])
        os._exit(0)
    except BaseException as exc:
        send(replies, ["error", f"exception: {type(exc).__name__}: {message_of(exc)}"])
        os._exit(0)
    send(replies, ["ready"])
    serve(Exporter(), namespace, requests, replies)
    os._exit(0)
