"""Source files: their languages by file name, the directories that hold none, and the
tree-sitter parsers of those languages.

The one table shared by data readers, repository context (repo/checkout.py), import parsing
(repo/imports.py) and FIM splits (fim/split.py), and the one place that loads grammars.

Grammars: from tree_sitter_language_pack (0.x bundles them; pinned <1 in pyproject because 1.x
downloads them at run time), else from the per-language `tree_sitter_<lang>` wheels if installed.
"""

from __future__ import annotations

import importlib
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

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", ".bzr", "node_modules", "vendor", "vendors", "third_party", "third-party",
    "thirdparty", "external", "_vendor", "__pycache__", ".venv", "venv", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", "site-packages", "dist-packages", "build", "dist", "target",
    "bower_components", ".idea", ".vscode",
})


def skip_dir(name: str) -> bool:
    """Whether a directory of this name holds no repository source worth reading: VCS metadata,
    vendored code, caches, build output (SKIP_DIRS), hidden directories, package metadata."""
    return name in SKIP_DIRS or name.startswith(".") or name.endswith((".dist-info", ".egg-info"))


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


# language -> (module, function) of the per-language grammar wheels
_GRAMMAR_MODULES = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "java": ("tree_sitter_java", "language"),
    "kotlin": ("tree_sitter_kotlin", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "c_sharp": ("tree_sitter_c_sharp", "language"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
}
_PACK_NAMES = {"c_sharp": "csharp"}


class ParserCache:
    """tree-sitter parsers by language, created on first use. One per process or thread: parsers
    are neither picklable nor safe to share between threads. `errors` says why a language has none."""

    def __init__(self):
        self._parsers: dict[str, object | None] = {}
        self.errors: dict[str, str] = {}

    def get(self, language: str | None):
        """The parser of `language`, or None when it has no grammar here."""
        if not language:
            return None
        if language not in self._parsers:
            self._parsers[language] = self._load(language)
        return self._parsers[language]

    def _load(self, language: str):
        try:
            from tree_sitter import Language, Parser
        except ImportError as exc:   # no tree-sitter at all: callers fall back (FIM) or see no imports
            self.errors[language] = f"tree_sitter: {exc}"
            return None
        pack_name = _PACK_NAMES.get(language, language)
        try:
            import tree_sitter_language_pack as pack

            return pack.get_parser(pack_name)      # 0.x: bundled grammars (the pinned version)
        except Exception as exc:  # 1.x offline (it downloads grammars), or a language it lacks
            self.errors[language] = f"tree_sitter_language_pack: {exc}"
        mod_name, fn = _GRAMMAR_MODULES.get(language, (None, None))
        if mod_name:
            try:
                mod = importlib.import_module(mod_name)
                return Parser(Language(getattr(mod, fn)()))
            except ImportError as exc:
                self.errors[language] = f"no tree-sitter grammar for {language}: {self.errors.get(language)}; {exc}"
        return None
