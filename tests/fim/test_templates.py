"""codegemma.fim.templates: the Go templates Ollama and the Modelfile carry build our exact prompt."""

from __future__ import annotations

import re

import pytest

from codegemma.fim.format import STOP_TEXTS, render_chat, render_fim
from codegemma.fim.templates import modelfile, ollama_template


def render_go(template: str, prompt: str = "", suffix: str = "", messages=()) -> str:
    """The subset of Go's text/template these templates use, as Ollama evaluates it."""
    m = re.fullmatch(r"\{\{- if \.Suffix \}\}(.*)\{\{- else \}\}(.*)\{\{- end \}\}", template, re.S)
    assert m, template
    body = m.group(1) if suffix else m.group(2)
    role_if = '{{ if eq .Role "user" }}user{{ else }}model{{ end }}'
    body = body.replace(role_if, "{{ .Role }}")
    loop = re.search(r"\{\{- range \.Messages \}\}(.*?)\{\{ end \}\}", body, re.S)
    if loop:
        turns = ""
        for msg in messages:
            role = "user" if msg["role"] == "user" else "model"
            turns += loop.group(1).replace("{{ .Role }}", role).replace("{{ .Content }}", msg["content"])
        body = body[:loop.start()] + turns + body[loop.end():]
    return body.replace("{{ .Prompt }}", prompt).replace("{{ .Suffix }}", suffix)


@pytest.mark.parametrize("mode", ["psm", "spm"])
@pytest.mark.parametrize("chat", [False, True])
def test_fim_requests_render_exactly_our_prompt(mode, chat):
    template = ollama_template(mode, chat=chat)
    assert render_go(template, "def f(", "):\n") == render_fim("def f(", "):\n", mode=mode)


def test_without_suffix_the_prompt_runs_verbatim_or_as_a_conversation():
    assert render_go(ollama_template("psm"), "def f(") == "def f("
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "?"}]
    # Ollama adds <bos> itself (the GGUF says add_bos_token), so the template starts after it
    assert "<bos>" + render_go(ollama_template("spm", chat=True), messages=msgs) == render_chat(msgs)


def test_modelfile_names_the_weights_the_template_and_every_stop():
    text = modelfile("./cg.q4_0.gguf", "spm", parameters={"temperature": 0})
    lines = text.splitlines()
    assert lines[0] == "FROM ./cg.q4_0.gguf"
    assert f'TEMPLATE """{ollama_template("spm")}"""' in lines
    assert [line for line in lines if line.startswith("PARAMETER stop")] == [f'PARAMETER stop "{s}"' for s in STOP_TEXTS]
    assert lines[-1] == "PARAMETER temperature 0"
