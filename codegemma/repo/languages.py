"""Source languages by file name: the one table shared by data readers, import parsing and FIM splits."""

from __future__ import annotations

import posixpath

# extension -> language name (names match tree-sitter grammar names where one exists)
EXTENSIONS = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".java": "java",
    ".kt": "kotlin", ".kts": "kotlin",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp",
    ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp", ".h++": "cpp", ".ipp": "cpp",
    ".cs": "c_sharp",
    ".go": "go",
    ".rs": "rust",
}

LANGUAGES = tuple(sorted(set(EXTENSIONS.values())))


def language_of(path: str) -> str | None:
    """The language of `path` by its extension, or None for files we do not train on."""
    ext = posixpath.splitext(path)[1].lower()
    return EXTENSIONS.get(ext)


_DIR_MODULES = {"python": "__init__", "rust": "mod", "javascript": "index", "typescript": "index", "tsx": "index"}


def module_keys(path: str) -> tuple[tuple[str, ...], ...]:
    """The module paths a file answers to (path components, extension removed).

    `pkg/sub/__init__.py`, `src/x/mod.rs` and `lib/x/index.ts` also name their directory, as in
    those languages.
    """
    stem, _ = posixpath.splitext(path)
    parts = tuple(p for p in stem.split("/") if p)
    keys = [parts]
    lang = language_of(path)
    if len(parts) > 1 and lang and parts[-1] == _DIR_MODULES.get(lang):
        keys.insert(0, parts[:-1])
    return tuple(keys)
