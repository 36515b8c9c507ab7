"""The licence of a model directory, as its own files state it (what Ollama's /api/show reports).

Where it is read, first found wins:
1. the model card's metadata: `license:` in the YAML front matter of README.md, the Hugging Face
   convention (google/codegemma-* say `license: gemma`; codegemma-nano's card says apache-2.0);
2. a licence file in the directory (LICENSE, LICENSE.txt, LICENSE.md, LICENCE), its text;
3. otherwise the licence is unknown, and the answer says so rather than guess.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

GEMMA_TERMS = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"
# Hugging Face licence ids -> how they are usually written (SPDX where there is one).
_NAMES = {"apache-2.0": "Apache-2.0", "mit": "MIT", "bsd-3-clause": "BSD-3-Clause", "bsd-2-clause": "BSD-2-Clause",
          "gemma": GEMMA_TERMS, "openrail": "OpenRAIL", "bigcode-openrail-m": "BigCode OpenRAIL-M",
          "llama2": "Llama 2 Community License", "cc-by-4.0": "CC-BY-4.0", "cc-by-sa-4.0": "CC-BY-SA-4.0"}
_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENCE.txt", "LICENCE.md")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)


def _card_fields(readme: Path) -> dict[str, str]:
    """The flat `key: value` lines of a model card's YAML front matter (lists and nesting ignored)."""
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}
    fields = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith((" ", "-", "#")):
            fields[key.strip()] = value.strip().strip("'\"")
    return fields


def model_licence(model_dir: str | os.PathLike | None) -> str:
    """The licence of the model in `model_dir`, in words; "unknown (...)" when its files do not say."""
    if model_dir is None:
        return "unknown (no model directory)"
    directory = Path(model_dir)
    card = _card_fields(directory / "README.md")
    licence = card.get("license", "")
    if licence and licence != "other":
        return _NAMES.get(licence.lower(), licence)
    if card.get("license_name") or card.get("license_link"):
        return " ".join(v for v in (card.get("license_name"), f"({card['license_link']})"
                                    if card.get("license_link") else None) if v)
    for name in _FILES:
        path = directory / name
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace").strip()
    return (f"unknown (no `license:` in the model card's metadata and no LICENSE file in {directory.name}; "
            "check where the weights came from)")
