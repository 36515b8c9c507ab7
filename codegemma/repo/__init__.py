"""Repository structure shared by data packing and inference-time context.

- imports.py: imports from a file's first lines, per language.
- graph.py: imports resolved to files (longest path-suffix match), weighted, cycles broken.
- order.py: the packing order (dependency order, then alphabetical with tests beside code).
- context.py: `related_files(repo_files, current_path, budget)` for cross-file prompts.
"""

from codegemma.repo.context import related_files
from codegemma.repo.order import order_repository

__all__ = ["order_repository", "related_files"]
