"""Import extraction with tree-sitter: one test per language feature."""

import pytest

from codegemma.repo.imports import TOP_LINES, Import, ImportParser, _import_region, extract_imports


@pytest.fixture(scope="module")
def parser():
    return ImportParser()


def test_python_multi_line_parenthesised_import(parser):
    text = "from app.models import (\n    User,\n    Group as G,\n)\n\nUser()\n"
    assert parser.imports("app/views.py", text) == [
        Import((("app", "models", "User"), ("app", "models")), False, "User"),
        Import((("app", "models", "Group"), ("app", "models")), False, "G"),
    ]


def test_python_backslash_continuation_and_plain_imports(parser):
    text = "import os.path as osp, json\nfrom pkg.sub import \\\n    thing\n"
    assert parser.imports("x.py", text) == [
        Import((("os", "path"),), False, "osp"),
        Import((("json",),), False, "json"),
        Import((("pkg", "sub", "thing"), ("pkg", "sub")), False, "thing"),
    ]


def test_python_relative_imports(parser):
    text = "from . import util\nfrom ..core.base import (Base,\n  Mixin)\nfrom .. import *\n"
    assert parser.imports("pkg/sub/mod.py", text) == [
        Import((("pkg", "sub", "util"), ("pkg", "sub")), True, "util"),
        Import((("pkg", "core", "base", "Base"), ("pkg", "core", "base")), True, "Base"),
        Import((("pkg", "core", "base", "Mixin"), ("pkg", "core", "base")), True, "Mixin"),
        Import((("pkg",),), True, ""),
    ]
    # climbing above the repository root names nothing we can find
    assert parser.imports("top.py", "from ... import x\n") == []


def test_python_imports_inside_blocks_count_but_not_strings_or_late_lines(parser):
    text = ('"""Docs that say import fake."""\n'
            "try:\n    import fast_json as json\nexcept ImportError:\n    import json\n"
            "if TYPE_CHECKING:\n    from app.types import (\n        T,\n    )\n"
            "s = 'import nothing'\n")
    got = [(imp.candidates[0], imp.name) for imp in parser.imports("a.py", text)]
    assert got == [(("fast_json",), "json"), (("json",), "json"), (("app", "types", "T"), "T")]
    late = "x = 1\n" * TOP_LINES + "import late\n"
    assert parser.imports("a.py", late) == []
    assert [i.name for i in parser.imports("a.py", "x = 1\n" * (TOP_LINES - 1) + "import edge\n")] == ["edge"]


def test_js_import_from_with_default_named_namespace_and_side_effect(parser):
    text = ("import React, { useState } from 'react';\n"
            "import {\n  a as b,\n  c,\n} from './lib/ab.js';\n"
            "import * as ns from \"../shared/ns\";\n"
            "import './polyfill';\n")
    assert parser.imports("web/app/main.js", text) == [
        Import((("react",),), False, "React"),
        Import((("web", "app", "lib", "ab"),), True, "b"),
        Import((("web", "shared", "ns"),), True, "ns"),
        Import((("web", "app", "polyfill"),), True, ""),
    ]


def test_js_require_and_dynamic_import(parser):
    text = ("const util = require('./util');\n"
            "const { join } = require(\n  'path'\n);\n"
            "async function load() {\n  const m = await import('./lazy');\n  return import(\"@scope/pkg/sub\");\n}\n"
            "notRequire('./nope');\n")
    assert parser.imports("src/index.js", text) == [
        Import((("src", "util"),), True, "util"),
        Import((("path",),), False, ""),
        Import((("src", "lazy"),), True, "m"),
        Import((("pkg", "sub"),), False, ""),
    ]


def test_js_re_exports(parser):
    text = "export { a, b as c } from './ab';\nexport * from './all';\nexport const x = 1;\n"
    assert parser.imports("lib/index.mjs", text) == [
        Import((("lib", "ab"),), True, ""),
        Import((("lib", "all"),), True, ""),
    ]


@pytest.mark.parametrize("path", ["src/a.ts", "src/a.tsx"])
def test_typescript_import_type_and_import_require(parser, path):
    text = ("import type { Props } from './types';\n"
            "import legacy = require('./legacy');\n"
            "export type { Shape } from '../shapes';\n")
    assert parser.imports(path, text) == [
        Import((("src", "types"),), True, "Props"),
        Import((("src", "legacy"),), True, "legacy"),
        Import((("shapes",),), True, ""),
    ]


def test_java_imports_static_and_wildcards(parser):
    text = ("package com.acme.app;\n\n"
            "import com.acme.util.Strings;\n"
            "import static com.acme.util.Maths.max;\n"
            "import com.acme.model.*;\n"
            "import static com.acme.util.Consts.*;\n")
    assert parser.imports("src/com/acme/app/App.java", text) == [
        Import((("com", "acme", "util", "Strings"), ("com", "acme", "util")), False, "Strings"),
        Import((("com", "acme", "util", "Maths", "max"), ("com", "acme", "util", "Maths")), False, "max"),
        Import((("com", "acme", "model"),), False, "", is_dir=True),
        Import((("com", "acme", "util", "Consts"),), False, ""),
    ]


def test_kotlin_imports_with_alias_and_wildcard(parser):
    text = "package a.b\n\nimport com.acme.Util\nimport com.acme.Other as O\nimport com.acme.sub.*\n"
    assert parser.imports("src/a/b/x.kt", text) == [
        Import((("com", "acme", "Util"), ("com", "acme")), False, "Util"),
        Import((("com", "acme", "Other"), ("com", "acme")), False, "O"),
        Import((("com", "acme", "sub"),), False, "", is_dir=True),
    ]


@pytest.mark.parametrize("path", ["lib/x.c", "lib/x.cpp"])
def test_c_includes_quoted_relative_first_system_by_suffix(parser, path):
    text = '#include "util/q.h"\n#include <stdio.h>\n#ifdef X\n#  include "../cfg.hpp"\n#endif\nint x;\n'
    assert parser.imports(path, text) == [
        Import((("lib", "util", "q"),), True, "", ext=".h"),
        Import((("util", "q"),), False, "", ext=".h"),
        Import((("stdio",),), False, "", ext=".h"),
        Import((("cfg",),), True, "", ext=".hpp"),
        Import((("cfg",),), False, "", ext=".hpp"),
    ]


def test_c_sharp_using_plain_static_alias_global_and_nested(parser):
    text = ("using System;\nusing static Acme.Util.Maths;\nusing Str = Acme.Util.Strings;\n"
            "global using Acme.Core;\nnamespace N {\n  using Acme.Inner;\n}\n")
    assert parser.imports("src/N/X.cs", text) == [
        Import((("System",),), False, "System", is_dir=True),
        Import((("Acme", "Util", "Maths"),), False, ""),
        Import((("Acme", "Util", "Strings"),), False, "Str"),
        Import((("Acme", "Util", "Strings"),), False, "Str", is_dir=True),
        Import((("Acme", "Core"),), False, "Core", is_dir=True),
        Import((("Acme", "Inner"),), False, "Inner", is_dir=True),
    ]


def test_go_single_imports_and_blocks_with_aliases(parser):
    text = ('package main\n\nimport "fmt"\n\nimport (\n\tu "github.com/acme/util"\n'
            '\t. "github.com/acme/dot"\n\t_ "github.com/acme/side"\n\t"github.com/acme/plain"\n)\n')
    assert parser.imports("cmd/main.go", text) == [
        Import((("fmt",),), False, "fmt", is_dir=True),
        Import((("github.com", "acme", "util"),), False, "u", is_dir=True),
        Import((("github.com", "acme", "dot"),), False, "dot", is_dir=True),
        Import((("github.com", "acme", "side"),), False, "side", is_dir=True),
        Import((("github.com", "acme", "plain"),), False, "plain", is_dir=True),
    ]


def test_rust_use_trees(parser):
    text = "use crate::a::{b, c::{d as e}, self};\nuse std::io::{\n    Read,\n    Write,\n};\n"
    assert parser.imports("src/main.rs", text) == [
        Import((("a", "b"), ("a",)), False, "b"),
        Import((("a", "c", "d"), ("a", "c"), ("a",)), False, "e"),
        Import((("a",),), False, "a"),
        Import((("std", "io", "Read"), ("std", "io"), ("std",)), False, "Read"),
        Import((("std", "io", "Write"), ("std", "io"), ("std",)), False, "Write"),
    ]


def test_rust_mod_self_super_and_wildcards(parser):
    text = "mod lexer;\npub mod inline { fn f() {} }\nuse self::lexer::Token;\nuse super::util::*;\nuse super::*;\n"
    # src/parse.rs is module `parse`: its child modules live in src/parse/, its parent is src/
    assert parser.imports("src/parse.rs", text) == [
        Import((("src", "parse", "lexer"),), True, "lexer"),
        Import((("src", "parse", "lexer", "Token"), ("src", "parse", "lexer")), True, "Token"),
        Import((("src", "util"),), True, ""),
        Import((("src",),), True, ""),
    ]
    # main.rs / lib.rs / mod.rs own their directory
    assert parser.imports("src/main.rs", "mod lexer;\n") == [Import((("src", "lexer"),), True, "lexer")]


def test_only_the_import_region_is_parsed():
    head = 'import a\nfrom b import (\n  c,\n  d)\nx = f(\n  1)\n'
    assert _import_region(head, ("import",)) == 'import a\nfrom b import (\n  c,\n  d)\n'
    assert _import_region("x = 1\ny = 2\n", ("import",)) == ""
    assert _import_region("import a, \\\n  b\nc = 1\n", ("import",)) == "import a, \\\n  b\n"


def test_unknown_language_and_broken_source_give_no_crash(parser):
    assert parser.imports("notes.txt", "import x\n") == []
    assert parser.imports("a.py", "from (((\nimport \x00 ok\n") is not None
    assert [i.name for i in parser.imports("a.py", "import ok\ndef broken(:\n")] == ["ok"]
    assert extract_imports("a.py", "import one_off\n") == [Import((("one_off",),), False, "one_off")]
