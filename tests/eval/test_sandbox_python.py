"""The judge's strict decoder and the proxies: only plain data crosses from the sample."""

import math
import os

import pytest

from codegemma.eval import sandbox_python as sp
from codegemma.eval.sandbox_python import Exporter, ProtocolError, Remote, decode_answer, encode

TEST = "def check(candidate):\n    assert candidate() == 1\n"


def roundtrip(value):
    """What the judge gets when the sample's function returns `value`."""
    return decode_answer(Exporter().export(value), judge=None, budget=[sp.MAX_ITEMS])


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 2 ** 200, 1.5, math.inf, "é\ud800", b"\x00\xff", 1 + 2j,
    [1, [2, (3, {4})]], (), {"a": [1], (1, 2): frozenset({3})}, {1: None, "1": 2.0},
])
def test_plain_data_crosses_with_its_exact_types(value):
    got = roundtrip(value)
    assert got == value and type(got) is type(value)
    assert repr(got) == repr(value)


def test_nan_crosses():
    assert math.isnan(roundtrip(math.nan))


def test_subclasses_of_plain_types_arrive_as_the_plain_type():
    from collections import Counter, OrderedDict, namedtuple

    class Liar(int):
        def __eq__(self, other):
            return True

    point = namedtuple("P", "x y")(1, 2)
    for value, expected in [(Liar(3), 3), (Counter("aab"), {"a": 2, "b": 1}),
                            (OrderedDict(a=1), {"a": 1}), (point, (1, 2))]:
        got = roundtrip(value)
        assert got == expected and type(got) is type(expected)
    assert roundtrip(Liar(3)) != 4


def test_other_objects_stay_in_the_sample_as_opaque_handles():
    class Fancy:
        def __eq__(self, other):
            return True

    exporter = Exporter()
    handle = decode_answer(exporter.export(Fancy()), judge=None, budget=[10])
    assert type(handle) is Remote and handle != 1 and handle == handle
    with pytest.raises(TypeError):
        bool(handle)
    with pytest.raises(AttributeError):
        handle.__class_getitem__
    assert isinstance(exporter.kept[0], Fancy)


@pytest.mark.parametrize("wire", [
    {"a": 1},                      # a JSON object: never sent by the sample's encoder
    ["x", 1], [], [1, 2],          # unknown or missing tags
    ["s", ["l", 1]],               # an unhashable item in a set
    ["d", ["l"], 1],               # an unhashable key
    ["d", 1],                      # odd pairs
    ["b", "\u0100"], ["c", "1", 2], ["h", "0", "x"], ["r", ["n", "f"]],
])
def test_the_decoder_rejects_anything_else(wire):
    with pytest.raises(ProtocolError):
        decode_answer(wire, None, [sp.MAX_ITEMS])


def test_the_decoder_bounds_depth_and_size():
    assert decode_answer(["l", ["l", ["l", ["l"]]]], None, [100]) == [[[[]]]]
    deep = 1
    for _ in range(sp.MAX_DEPTH + 5):
        deep = ["l", deep]
    with pytest.raises(ProtocolError):
        decode_answer(deep, None, [sp.MAX_ITEMS])
    with pytest.raises(ProtocolError):
        decode_answer(["l"] + [1] * 100, None, [50])


def test_frames_larger_than_the_limit_are_refused_unread():
    r, w = os.pipe()
    try:
        os.write(w, (sp.MAX_FRAME + 1).to_bytes(4, "big") + b"[")
        with pytest.raises(ProtocolError, match="bytes"):
            sp.receive(r)
    finally:
        os.close(r)
        os.close(w)


def test_the_tests_may_only_send_plain_data_and_handles():
    assert encode([1, (2.0, "x"), {None: b"y"}]) == ["l", 1, ["t", 2.0, "x"], ["d", None, ["b", "y"]]]
    with pytest.raises(TypeError, match="only plain data"):
        encode([lambda: 1])
    assert encode(Remote(None, ["n", "f"], "f")) == ["r", ["n", "f"]]


def test_builtin_exceptions_map_to_themselves_and_others_to_exception():
    assert sp.builtin_exception("ValueError") is ValueError
    assert sp.builtin_exception("KeyboardInterrupt") is Exception  # not an Exception subclass
    assert sp.builtin_exception("print") is Exception
    assert sp.builtin_exception(["ValueError"]) is Exception


def test_calls_pass_arguments_and_copy_back_changes(sandbox):
    test = ("def check(candidate):\n    xs = [3, 1, 2]\n    assert candidate(xs) is None\n"
            "    assert xs == [1, 2, 3]\n    d = {}\n"
            "    assert candidate(xs, key=d) is None and d == {'seen': 3}\n")
    code = ("def f(xs, key=None):\n    xs.sort()\n    if key is not None:\n"
            "        key['seen'] = len(xs)\n")
    assert sandbox.run(code, test, "f").passed
    assert not sandbox.run(code.replace("xs.sort()", "xs = sorted(xs)"), test, "f").passed


def test_objects_of_the_sample_can_be_built_used_and_passed_back(sandbox):
    code = ("class Node:\n    def __init__(self, v):\n        self.v, self.next = v, None\n"
            "def total(n):\n    return 0 if n is None else n.v + total(n.next)\n")
    test = ("a = Node(1)\na.next = Node(2)\na.next.next = Node(3)\n"
            "assert total(a) == 6 and a.next.v == 2\n")
    assert sandbox.run(code, test).passed
    assert not sandbox.run(code.replace("n.v +", "1 +"), test).passed


def test_plain_types_cross_by_name_and_nothing_else_does(sandbox):
    """MBPP/533 passes `int` and `str` to the sample (remove_datatype(t, int)); a type is not data, but
    the plain types themselves cross by name, both ways, and arrive as the very types."""
    test = ("def check(candidate):\n    assert candidate((4, 'a', 5.0), int) == [4]\n"
            "    assert candidate((4, 'a'), str) == ['a']\n")
    code = "def f(t, kind):\n    assert kind is int or kind is str\n    return [x for x in t if type(x) is kind]\n"
    assert sandbox.run(code, test, "f").passed
    assert sandbox.run("def f():\n    return type(None), dict\n", "assert f() == (type(None), dict)\n").passed
    assert sp.decode_answer(["y", "int"], None, [10]) is int
    for wire in (["y", "object"], ["y", "type"], ["y", 3], ["y"]):
        with pytest.raises(sp.ProtocolError):
            sp.decode_answer(wire, None, [10])
    with pytest.raises(TypeError, match="only plain data"):
        sp.encode(object)
