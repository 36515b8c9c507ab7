"""Imports of a source file, parsed from its first `TOP_LINES` lines, as candidate repository paths.

Each import becomes an `Import`: candidate module paths (tuples of path components, most specific
first), whether it is explicitly relative to the importing file, and the name it binds in the file
(used by the edge-importance heuristic to count uses). Parsing is by line-level regular expressions:
imports sit in a file's header in every language we support, so a parser is not needed and this
stays cheap enough to run over every file of a corpus.

TOP_LINES = 200: licence headers (~20-40 lines) plus module docstrings (Python's stdlib has some of
60+ lines) plus import blocks of large files (up to ~100 lines) fit; imports later in a file are
usually local/lazy ones, which the paper's "top N lines" rule deliberately ignores.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from .languages import EXTENSIONS, language_of

TOP_LINES = 200


@dataclass(frozen=True)
class Import:
    candidates: tuple[tuple[str, ...], ...]   # module paths to try, most specific first
    relative: bool                              # explicitly relative to the importing file
    name: str                                   # identifier bound in the importing file ("" if none)
    is_dir: bool = False                        # names a directory/package (Go), not a file
    ext: str = ""                               # extension the import names (C/C++ includes)


def _rel_parts(importer: str, rel: str) -> tuple[str, ...] | None:
    """Resolve `rel` (e.g. "../util/x") against the importing file's directory; None if it escapes."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(importer), rel))
    if joined.startswith(".."):
        return None
    stem, ext = posixpath.splitext(joined)
    if ext.lower() in EXTENSIONS:
        joined = stem
    return tuple(p for p in joined.split("/") if p and p != ".")


_PY_IMPORT = re.compile(r"^\s*import\s+([\w., ]+)")
_PY_FROM = re.compile(r"^\s*from\s+(\.*)([\w.]*)\s+import\s+\(?\s*([\w., *]+)")


def _python(path: str, lines: list[str]) -> list[Import]:
    out = []
    pkg_dir = posixpath.dirname(path)
    for line in lines:
        m = _PY_FROM.match(line)
        if m:
            dots, mod, names = m.group(1), m.group(2), m.group(3)
            mod_parts = tuple(p for p in mod.split(".") if p)
            bound = [n.split(" as ")[-1].strip() for n in names.split(",") if n.strip() and n.strip() != "*"]
            if dots:
                base = pkg_dir
                for _ in range(len(dots) - 1):
                    base = posixpath.dirname(base)
                base_parts = tuple(p for p in base.split("/") if p)
                for name in bound or [""]:
                    full = base_parts + mod_parts + ((name,) if name else ())
                    cands = (full, base_parts + mod_parts) if name else (base_parts + mod_parts,)
                    out.append(Import(tuple(c for c in cands if c), True, name))
            else:
                for name in bound or [""]:
                    cands = ((mod_parts + (name,)) if name else mod_parts, mod_parts)
                    out.append(Import(cands, False, name or (mod_parts[-1] if mod_parts else "")))
            continue
        m = _PY_IMPORT.match(line)
        if m:
            for item in m.group(1).split(","):
                item = item.strip()
                if not item:
                    continue
                mod, _, alias = item.partition(" as ")
                parts = tuple(p for p in mod.strip().split(".") if p)
                if parts:
                    out.append(Import((parts,), False, alias.strip() or parts[0]))
    return out


_JS_FROM = re.compile(r"""(?:\bfrom\s+|\brequire\s*\(\s*|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]""")
_JS_NAME = re.compile(r"^\s*(?:import|export)\s+(?:\*\s+as\s+)?(\w+)")


def _javascript(path: str, lines: list[str]) -> list[Import]:
    out = []
    for line in lines:
        for spec in _JS_FROM.findall(line):
            m = _JS_NAME.match(line)
            name = m.group(1) if m and m.group(1) not in ("type", "from") else ""
            if spec.startswith("."):
                parts = _rel_parts(path, spec)
                if parts:
                    out.append(Import((parts,), True, name))
            else:
                parts = tuple(p for p in spec.split("/") if p and not p.startswith("@"))
                if parts:
                    out.append(Import((parts,), False, name))
    return out


_JAVA = re.compile(r"^\s*import\s+(?:static\s+)?([\w.]+)(\.\*)?\s*;?")


def _java_like(path: str, lines: list[str]) -> list[Import]:
    out = []
    for line in lines:
        m = _JAVA.match(line)
        if m:
            parts = tuple(m.group(1).split("."))
            if m.group(2):      # wildcard: the package directory
                out.append(Import((parts,), False, "", is_dir=True))
            else:
                # `import a.b.C` or `import static a.b.C.member`: try the class, then its owner
                out.append(Import((parts, parts[:-1]), False, parts[-1]))
    return out


_INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def _c_like(path: str, lines: list[str]) -> list[Import]:
    out = []
    for line in lines:
        m = _INCLUDE.match(line)
        if m:
            spec = m.group(2)
            stem, ext = posixpath.splitext(spec)
            if m.group(1) == '"':
                rel = _rel_parts(path, spec)
                if rel:
                    out.append(Import((rel,), True, "", ext=ext.lower()))
            parts = tuple(p for p in stem.split("/") if p and p not in ("..", "."))
            if parts:
                out.append(Import((parts,), False, "", ext=ext.lower()))
    return out


_CS = re.compile(r"^\s*(?:global\s+)?using\s+(?:static\s+)?(?:\w+\s*=\s*)?([\w.]+)\s*;")


def _c_sharp(path: str, lines: list[str]) -> list[Import]:
    out = []
    for line in lines:
        m = _CS.match(line)
        if m:
            parts = tuple(m.group(1).split("."))
            out.append(Import((parts,), False, parts[-1], is_dir=True))
    return out


_GO_SINGLE = re.compile(r'^\s*import\s+(\w+\s+)?"([^"]+)"')
_GO_BLOCK_ITEM = re.compile(r'^\s*(\w+\s+|[._]\s+)?"([^"]+)"')


def _go(path: str, lines: list[str]) -> list[Import]:
    out, in_block = [], False
    for line in lines:
        if in_block:
            if line.strip().startswith(")"):
                in_block = False
                continue
            m = _GO_BLOCK_ITEM.match(line)
        elif re.match(r"^\s*import\s*\(", line):
            in_block = True
            continue
        else:
            m = _GO_SINGLE.match(line)
        if m:
            parts = tuple(p for p in m.group(2).split("/") if p)
            alias = (m.group(1) or "").strip()
            out.append(Import((parts,), False, alias if alias not in ("", ".", "_") else parts[-1], is_dir=True))
    return out


_RS_USE = re.compile(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?use\s+([\w:]+)")
_RS_MOD = re.compile(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?mod\s+(\w+)\s*;")


def _rust(path: str, lines: list[str]) -> list[Import]:
    out = []
    here = tuple(p for p in posixpath.dirname(path).split("/") if p)
    for line in lines:
        m = _RS_MOD.match(line)
        if m:
            out.append(Import((here + (m.group(1),),), True, m.group(1)))
            continue
        m = _RS_USE.match(line)
        if m:
            parts = [p for p in m.group(1).split("::") if p]
            if not parts:
                continue
            relative = parts[0] in ("self", "super")
            base = here
            while parts and parts[0] in ("self", "super", "crate"):
                if parts[0] == "super":
                    base = base[:-1]
                parts.pop(0)
            if not parts:
                continue
            prefix = base if relative else ()
            cands = tuple(prefix + tuple(parts[:k]) for k in range(len(parts), 0, -1))
            out.append(Import(cands, relative, parts[-1]))
    return out


_PARSERS = {
    "python": _python, "javascript": _javascript, "typescript": _javascript, "tsx": _javascript,
    "java": _java_like, "kotlin": _java_like, "c": _c_like, "cpp": _c_like, "c_sharp": _c_sharp,
    "go": _go, "rust": _rust,
}


def extract_imports(path: str, text: str, top_lines: int = TOP_LINES) -> list[Import]:
    """The imports among the first `top_lines` lines of `text` (a file at repository path `path`)."""
    parser = _PARSERS.get(language_of(path) or "")
    if parser is None:
        return []
    head = text.split("\n", top_lines)[:top_lines]
    return parser(path, head)
