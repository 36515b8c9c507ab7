"""Every prompt template other tools read, rendered from format.py's layout for either FIM order.

Ollama (`/api/show`, which Continue reads to decide that a model can fill in the middle) and the
Modelfile written beside a GGUF export describe the prompt in Go-template syntax; llama.cpp's
server and Ollama then build the same prompt codegemma builds, and stop on the same texts.
"""

from __future__ import annotations

from codegemma.fim.format import (END_OF_TURN, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, START_OF_TURN, STOP_TEXTS,
                                  check_mode)

_CHAT = ('{{- range .Messages }}' + START_OF_TURN + '{{ if eq .Role "user" }}user{{ else }}model{{ end }}\n'
         '{{ .Content }}' + END_OF_TURN + '\n{{ end }}' + START_OF_TURN + 'model\n')


def fim_template(mode: str) -> str:
    """The FIM part: `.Prompt` is the text before the cursor, `.Suffix` the text after it."""
    if check_mode(mode) == "psm":
        return f"{FIM_PREFIX}{{{{ .Prompt }}}}{FIM_SUFFIX}{{{{ .Suffix }}}}{FIM_MIDDLE}"
    return f"{FIM_SUFFIX}{{{{ .Suffix }}}}{FIM_PREFIX}{{{{ .Prompt }}}}{FIM_MIDDLE}"


def ollama_template(mode: str = "psm", chat: bool = False) -> str:
    """A request with a suffix is FIM in `mode`'s order; without one the prompt runs verbatim
    (pretrained models) or as a Gemma conversation (`chat`, instruction-tuned models)."""
    other = _CHAT if chat else "{{ .Prompt }}"
    return f"{{{{- if .Suffix }}}}{fim_template(mode)}{{{{- else }}}}{other}{{{{- end }}}}"


def modelfile(source: str, mode: str = "psm", chat: bool = False,
              parameters: dict[str, object] | None = None) -> str:
    """An Ollama Modelfile: FROM `source`, the template, the CodeGemma stop texts, `parameters`."""
    lines = [f"FROM {source}", f'TEMPLATE """{ollama_template(mode, chat)}"""']
    lines += [f'PARAMETER stop "{s}"' for s in STOP_TEXTS]
    lines += [f"PARAMETER {k} {v}" for k, v in (parameters or {}).items()]
    return "\n".join(lines) + "\n"


def parameters_text(parameters: dict[str, object] | None = None) -> str:
    """Ollama's `parameters` field of /api/show: the stop texts, then `parameters`."""
    lines = [f'stop "{s}"' for s in STOP_TEXTS] + [f"{k} {v}" for k, v in (parameters or {}).items()]
    return "\n".join(lines)
