"""One greedy FIM request gives the same text through every API and through `codegemma complete`."""

from __future__ import annotations

import subprocess
import sys

from codegemma.fim.format import render_fim

PREFIX = "def mean(values):\n    total = sum(values)\n    "
SUFFIX = "\n    return result\n\n\nprint(mean([1, 2, 3]))\n"
N = 16


def test_same_greedy_text_everywhere(server, client, model_dir):
    rendered = render_fim(PREFIX, SUFFIX)
    texts = {
        "openai suffix": client.post("/v1/completions", json={
            "model": "m", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": N, "temperature": 0}
        ).json()["choices"][0]["text"],
        "openai rendered": client.post("/v1/completions", json={
            "model": "m", "prompt": rendered, "max_tokens": N, "temperature": 0}).json()["choices"][0]["text"],
        "ollama suffix": client.post("/api/generate", json={
            "model": "m", "prompt": PREFIX, "suffix": SUFFIX, "stream": False,
            "options": {"num_predict": N, "temperature": 0}}).json()["response"],
        "llama.cpp infill": client.post("/infill", json={
            "input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": N, "temperature": 0}).json()["content"],
        "llama.cpp completion": client.post("/completion", json={
            "prompt": rendered, "n_predict": N, "temperature": 0}).json()["content"],
    }
    cli = subprocess.run([sys.executable, "-m", "codegemma", "complete", "--model", str(model_dir),
                          "--device", "cpu", "--prefix", PREFIX, "--suffix", SUFFIX,
                          "--max-new-tokens", str(N)], capture_output=True, timeout=300)
    assert cli.returncode == 0, cli.stderr.decode()
    texts["codegemma complete"] = cli.stdout.decode("utf-8", "replace")
    reference = texts["llama.cpp infill"]
    assert len(reference) >= 4, reference  # the test model says something: equality means something
    assert {k: v for k, v in texts.items() if v != reference} == {}
