"""Repository structure shared by data packing and inference-time context.

- languages.py: languages by file name, and the tree-sitter parsers (ParserCache).
- imports.py: imports from a file's first lines, per language, parsed with tree-sitter.
- graph.py: imports resolved to files (longest path-suffix match), weighted, cycles broken.
- order.py: the packing order (dependency order, then alphabetical with tests beside code).
- context.py: `related_files(repo_files, current_path, budget)` for cross-file prompts, and
  `repository_context(file, budget_tokens, count_tokens)` for a file on disk.
- checkout.py: a repository on disk: its root, its source files read within bounds.
"""

from codegemma.repo.checkout import find_repository_root, read_repository, repository_path
from codegemma.repo.context import related_files, repository_context
from codegemma.repo.order import order_repository

__all__ = ["find_repository_root", "order_repository", "read_repository", "related_files",
           "repository_context", "repository_path"]
