"""Imports of a source file, parsed with tree-sitter from its first `TOP_LINES` lines.

Each import becomes an `Import`: candidate module paths (tuples of path components, most specific
first), whether it is explicitly relative to the importing file, and the name it binds in the file
(used by the edge-importance heuristic in graph.py to count uses). Per language:

- Python: `import a.b as c`, `from ..x import (\\n p as q,\\n r)` (one Import per imported name:
  `from pkg import mod` may name a module), wildcards.
- JavaScript / TypeScript: `import ... from`, `import "x"`, `export ... from`, `import type`,
  `require("x")`, dynamic `import("x")`, TypeScript's `import x = require("x")`. Specifiers
  starting with "." are relative; bare ones drop `@scope` components.
- Java / Kotlin: imports with aliases (Kotlin `as`) and wildcards (a package directory; Java's
  `import static a.B.*` names the class file B).
- C / C++: `#include "x.h"` is relative to the including file first, then suffix-matched;
  `#include <x/y.h>` is suffix-matched only (a library's own headers are included so; a system
  header matches nothing unless the repository holds a file of that path).
- C#: `using A.B;` names a namespace directory; `using static A.B;` the class file; an alias
  `using X = A.B;` may be either, so both are tried.
- Go: `import "a/b"` and import blocks, with aliases: a package directory.
- Rust: `mod x;` (the file of module x, relative) and `use` trees (`use a::{b, c::{d as e}}`,
  `self::`, `super::`, `crate::`, wildcards), one Import per leaf path.

TOP_LINES = 200: licence headers (~20-40 lines) plus module docstrings (Python's stdlib has some of
60+ lines) plus import blocks of large files (up to ~100 lines) fit; imports later in a file are
usually local/lazy ones, which the paper's "top N lines" rule deliberately ignores. Imports found
anywhere in those lines count (inside `if TYPE_CHECKING:`, `try:`, a C# namespace, a function).

Cost: the data pipeline runs this over every file of a corpus, so only the part of the header
that can hold imports is parsed: up to the end of the statement on the last line that contains
one of the language's import keywords (a multi-line statement is followed to its closing
bracket); a header without any keyword is not parsed at all. Parsers and compiled queries live in
an `ImportParser`, made once per repository (build_graph) or per worker (the data packer).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from .languages import EXTENSIONS, ParserCache, language_of

TOP_LINES = 200


@dataclass(frozen=True)
class Import:
    candidates: tuple[tuple[str, ...], ...]   # module paths to try, most specific first
    relative: bool                              # explicitly relative to the importing file
    name: str                                   # identifier bound in the importing file ("" if none)
    is_dir: bool = False                        # names a directory/package (Go), not a file
    ext: str = ""                               # extension the import names (C/C++ includes)


def header_end(text: str, top_lines: int = TOP_LINES) -> int:
    """The index just past the first `top_lines` lines of `text`."""
    end = 0
    for _ in range(top_lines):
        nxt = text.find("\n", end)
        if nxt < 0:
            return len(text)
        end = nxt + 1
    return end


def _import_region(head: str, keywords: tuple[str, ...]) -> str:
    """The start of `head` through the statement on the last line holding an import keyword
    (followed while brackets are open or the line ends in a backslash); "" if there is none."""
    last = max(head.rfind(k) for k in keywords)
    if last < 0:
        return ""
    start = head.rfind("\n", 0, last) + 1
    depth = 0
    while True:
        end = head.find("\n", start)
        end = len(head) if end < 0 else end + 1
        line = head[start:end]
        depth += line.count("(") + line.count("[") + line.count("{")
        depth -= line.count(")") + line.count("]") + line.count("}")
        if end >= len(head) or (depth <= 0 and not line.rstrip().endswith("\\")):
            return head[:end]
        start = end


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _dotted(node) -> tuple[str, ...]:
    """A dotted or qualified name node `a.b.c` as ("a", "b", "c") (whitespace and Kotlin's
    backticks removed)."""
    return tuple(p for p in "".join(_text(node).split()).replace("`", "").split(".") if p)


def _rel_parts(importer: str, rel: str) -> tuple[str, ...] | None:
    """Resolve `rel` (e.g. "../util/x") against the importing file's directory; None if it escapes."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(importer), rel))
    if joined.startswith(".."):
        return None
    stem, ext = posixpath.splitext(joined)
    if ext.lower() in EXTENSIONS:
        joined = stem
    return tuple(p for p in joined.split("/") if p and p != ".")


def _dir_parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in posixpath.dirname(path).split("/") if p)


# ---- Python ---------------------------------------------------------------------------------------

def _python(path: str, node) -> list[Import]:
    if node.type == "import_statement":
        out = []
        for item in node.children_by_field_name("name"):
            alias = item.child_by_field_name("alias")
            parts = _dotted(item.child_by_field_name("name") if alias else item)
            if parts:
                out.append(Import((parts,), False, _text(alias) if alias else parts[0]))
        return out
    module = node.child_by_field_name("module_name")
    if module is None:
        return []
    names = []
    for item in node.children_by_field_name("name"):
        alias = item.child_by_field_name("alias")
        names.append((_dotted(item.child_by_field_name("name") if alias else item), _text(alias) if alias else None))
    if module.type == "relative_import":
        dots = sum(len(_text(c)) for c in module.children if c.type == "import_prefix")
        inner = [c for c in module.children if c.type == "dotted_name"]
        mod = _dotted(inner[0]) if inner else ()
        base = _dir_parts(path)
        if dots - 1 > len(base):
            return []                               # climbs above the repository root
        base = base[:len(base) - (dots - 1)]
        relative = True
    else:
        mod, base, relative = _dotted(module), (), False
    if not names:                                    # `from x import *`
        full = base + mod
        return [Import((full,), relative, "" if relative else (mod[-1] if mod else ""))] if full else []
    out = []
    for parts, alias in names:
        bound = alias or (parts[-1] if parts else "")
        cands = tuple(c for c in (base + mod + parts, base + mod) if c)
        if cands:
            out.append(Import(cands, relative, bound))
    return out


# ---- JavaScript / TypeScript ----------------------------------------------------------------------

def _js_bound_name(string_node) -> str:
    """The identifier the import of this specifier binds, "" if none (re-exports, side effects)."""
    holder = string_node.parent
    if holder.type == "import_statement":
        clause = next((c for c in holder.named_children if c.type == "import_clause"), None)
        for c in clause.named_children if clause else ():
            if c.type == "identifier":
                return _text(c)
            if c.type == "namespace_import":
                ids = [x for x in c.named_children if x.type == "identifier"]
                return _text(ids[0]) if ids else ""
            if c.type == "named_imports":
                for spec in c.named_children:
                    if spec.type == "import_specifier":
                        return _text(spec.child_by_field_name("alias") or spec.child_by_field_name("name"))
        return ""
    if holder.type == "import_require_clause":
        ids = [x for x in holder.named_children if x.type == "identifier"]
        return _text(ids[0]) if ids else ""
    if holder.type == "arguments":                  # require("x") / import("x")
        decl = holder.parent.parent
        while decl is not None and decl.type in ("await_expression", "parenthesized_expression"):
            decl = decl.parent
        if decl is not None and decl.type == "variable_declarator":
            name = decl.child_by_field_name("name")
            if name is not None and name.type == "identifier":
                return _text(name)
    return ""


def _javascript(path: str, node) -> list[Import]:
    fragment = next((c for c in node.named_children if c.type == "string_fragment"), None)
    if fragment is None:
        return []
    spec, name = _text(fragment), _js_bound_name(node)
    if spec.startswith("."):
        parts = _rel_parts(path, spec)
        return [Import((parts,), True, name)] if parts else []
    parts = tuple(p for p in spec.split("/") if p and not p.startswith("@"))
    return [Import((parts,), False, name)] if parts else []


_JS_QUERY = """
(import_statement source: (string) @import)
(export_statement source: (string) @import)
((call_expression function: (identifier) @fn arguments: (arguments . (string) @import .)) (#eq? @fn "require"))
(call_expression function: (import) arguments: (arguments . (string) @import))
"""
_TS_QUERY = _JS_QUERY + "(import_require_clause source: (string) @import)\n"


# ---- Java, Kotlin, C#, Go -------------------------------------------------------------------------

def _java(path: str, node) -> list[Import]:
    target = next((c for c in node.named_children if c.type in ("scoped_identifier", "identifier")), None)
    parts = _dotted(target) if target is not None else ()
    if not parts:
        return []
    wildcard = any(c.type == "asterisk" for c in node.children)
    if wildcard:
        static = any(c.type == "static" for c in node.children)
        return [Import((parts,), False, "", is_dir=not static)]   # a package's directory, or a class's file
    # `import a.b.C` or `import static a.b.C.member` / a nested class: the class, then its owner
    return [Import((parts, parts[:-1]), False, parts[-1])]


def _kotlin(path: str, node) -> list[Import]:
    target = next((c for c in node.named_children if c.type == "identifier"), None)
    parts = _dotted(target) if target is not None else ()
    if not parts:
        return []
    if any(c.type == "wildcard_import" for c in node.named_children):
        return [Import((parts,), False, "", is_dir=True)]
    alias = next((c for c in node.named_children if c.type == "import_alias"), None)
    alias_name = _text(alias.named_children[-1]) if alias is not None and alias.named_children else ""
    return [Import((parts, parts[:-1]), False, alias_name or parts[-1])]


def _c_sharp(path: str, node) -> list[Import]:
    named = node.named_children
    alias = node.child_by_field_name("name")
    target = named[-1] if named else None
    if target is None or target == alias:
        return []
    parts = _dotted(target)
    if not parts:
        return []
    if any(c.type == "static" for c in node.children):
        return [Import((parts,), False, "")]                       # the class's members
    if alias is not None:                                           # a namespace or a type
        name = _text(alias)
        return [Import((parts,), False, name), Import((parts,), False, name, is_dir=True)]
    return [Import((parts,), False, parts[-1], is_dir=True)]


def _go(path: str, node) -> list[Import]:
    spec = node.child_by_field_name("path")
    if spec is None:
        return []
    parts = tuple(p for p in _text(spec).strip('"`').split("/") if p)
    if not parts:
        return []
    alias = node.child_by_field_name("name")
    name = _text(alias) if alias is not None and alias.type == "package_identifier" else parts[-1]
    return [Import((parts,), False, name, is_dir=True)]


# ---- C / C++ --------------------------------------------------------------------------------------

def _c_like(path: str, node) -> list[Import]:
    raw = _text(node)
    quoted = node.type == "string_literal"
    spec = raw.strip('"') if quoted else raw.strip("<>")
    stem, ext = posixpath.splitext(spec)
    out = []
    if quoted:
        rel = _rel_parts(path, spec)
        if rel:
            out.append(Import((rel,), True, "", ext=ext.lower()))
    parts = tuple(p for p in stem.split("/") if p and p not in ("..", "."))
    if parts:
        out.append(Import((parts,), False, "", ext=ext.lower()))
    return out


# ---- Rust -----------------------------------------------------------------------------------------

def _rust_module_dir(path: str) -> tuple[str, ...]:
    """Where a file's child modules live: beside main.rs/lib.rs/mod.rs, else in a directory named
    after the file (`src/a.rs` -> `src/a/`)."""
    stem = posixpath.splitext(posixpath.basename(path))[0]
    here = _dir_parts(path)
    return here if stem in ("main", "lib", "mod") else here + (stem,)


def _use_leaves(node, prefix: tuple[str, ...]):
    """(path segments, alias, is_wildcard) for every leaf of a `use` tree."""
    kind = node.type
    if kind in ("scoped_use_list",):
        base = node.child_by_field_name("path")
        inner = prefix + (_segments(base) if base is not None else ())
        items = node.child_by_field_name("list")
        for item in items.named_children if items is not None else ():
            yield from _use_leaves(item, inner)
    elif kind == "use_list":
        for item in node.named_children:
            yield from _use_leaves(item, prefix)
    elif kind == "use_as_clause":
        target, alias = node.child_by_field_name("path"), node.child_by_field_name("alias")
        yield prefix + _segments(target), _text(alias) if alias is not None else "", False
    elif kind == "use_wildcard":
        target = node.named_children[0] if node.named_children else None
        yield prefix + (_segments(target) if target is not None else ()), "", True
    elif kind == "self" and prefix:                 # `use a::{self}` is `a` itself
        yield prefix, "", False
    else:
        yield prefix + _segments(node), "", False


def _segments(node) -> tuple[str, ...]:
    return tuple(s.strip().removeprefix("r#") for s in "".join(_text(node).split()).split("::") if s.strip())


def _rust(path: str, node) -> list[Import]:
    module_dir = _rust_module_dir(path)
    if node.type == "mod_item":
        name = node.child_by_field_name("name")
        if node.child_by_field_name("body") is not None or name is None:
            return []                                # an inline module: nothing to find
        return [Import((module_dir + (_text(name),),), True, _text(name))]
    argument = node.child_by_field_name("argument")
    out = []
    for segs, alias, wildcard in _use_leaves(argument, ()) if argument is not None else ():
        segs = list(segs)
        relative = bool(segs) and segs[0] in ("self", "super")
        base = module_dir
        while segs and segs[0] in ("self", "super", "crate"):
            if segs[0] == "super":
                base = base[:-1]
            segs.pop(0)
        prefix = base if relative else ()
        cands = tuple(prefix + tuple(segs[:k]) for k in range(len(segs), 0, -1))
        if not segs and relative and base:           # `use super::*`
            cands = (base,)
        if cands:
            out.append(Import(cands, relative, alias or ("" if wildcard or not segs else segs[-1])))
    return out


# language -> (handler(path, captured node), query capturing the nodes as @import, keywords)
_LANGUAGES = {
    "python": (_python, "[(import_statement) (import_from_statement)] @import", ("import",)),
    "javascript": (_javascript, _JS_QUERY, ("import", "require", "from")),
    "typescript": (_javascript, _TS_QUERY, ("import", "require", "from")),
    "tsx": (_javascript, _TS_QUERY, ("import", "require", "from")),
    "java": (_java, "(import_declaration) @import", ("import",)),
    "kotlin": (_kotlin, "(import_header) @import", ("import",)),
    "c": (_c_like, "(preproc_include path: [(string_literal) (system_lib_string)] @import)", ("include",)),
    "cpp": (_c_like, "(preproc_include path: [(string_literal) (system_lib_string)] @import)", ("include",)),
    "c_sharp": (_c_sharp, "(using_directive) @import", ("using",)),
    "go": (_go, "(import_spec) @import", ("import",)),
    "rust": (_rust, "[(use_declaration) (mod_item)] @import", ("use", "mod")),
}


class ImportParser:
    """Extracts imports with tree-sitter; keeps a parser and a compiled query per language, made on
    first use. Like its parsers, one per process or thread."""

    def __init__(self, parsers: ParserCache | None = None):
        self.parsers = parsers or ParserCache()
        self._queries: dict[str, object | None] = {}

    def _query(self, language: str, parser):
        if language not in self._queries:
            from tree_sitter import Query

            self._queries[language] = Query(parser.language, _LANGUAGES[language][1])
        return self._queries[language]

    def imports(self, path: str, text: str, top_lines: int = TOP_LINES) -> list[Import]:
        """The imports among the first `top_lines` lines of `text` (a file at repository path
        `path`), in the order they appear. [] for a language without a grammar here."""
        language = language_of(path)
        if language not in _LANGUAGES:
            return []
        handler, _, keywords = _LANGUAGES[language]
        region = _import_region(text[:header_end(text, top_lines)], keywords)
        parser = self.parsers.get(language) if region else None
        if parser is None:
            return []
        from tree_sitter import QueryCursor

        root = parser.parse(region.encode("utf-8", "surrogatepass")).root_node
        nodes = QueryCursor(self._query(language, parser)).captures(root).get("import", [])
        out = []
        for node in sorted(nodes, key=lambda n: n.start_byte):
            out.extend(handler(path, node))
        return out


def extract_imports(path: str, text: str, top_lines: int = TOP_LINES) -> list[Import]:
    """One file's imports (ImportParser.imports with a fresh parser; reuse an ImportParser for many)."""
    return ImportParser().imports(path, text, top_lines)
