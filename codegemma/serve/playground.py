"""GET / for a browser: a one-page completion playground (playground.html, no build step, no
external assets). A person types code, the page asks POST /infill (with `fim_mode`, the request's
FIM order) after a short pause and shows the reply as ghost text at the cursor; Tab accepts it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from codegemma.fim.format import MODES


@lru_cache(maxsize=1)
def _page() -> str:
    return resources.files("codegemma.serve").joinpath("playground.html").read_text(encoding="utf-8")


def playground_html(backend) -> str:
    config = {"model": backend.model_name, "fim_mode": backend.fim_mode, "modes": list(MODES)}
    # "</" cannot end the <script> element early when escaped as "<\/"
    blob = json.dumps(config).replace("</", "<\\/")
    return _page().replace("__CONFIG__", blob)
