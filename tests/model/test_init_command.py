"""`codegemma init`: a random model directory that transformers and codegemma both load."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from codegemma.cli import main
from codegemma.model.checkpoint import load_model

transformers = pytest.importorskip("transformers")

FIM_TEXTS = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|file_separator|>",
             "<start_of_turn>", "<end_of_turn>")
GEMMA_IDS = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<|fim_prefix|>": 67, "<|fim_middle|>": 68,
             "<|fim_suffix|>": 69, "<|file_separator|>": 70, "<start_of_turn>": 106, "<end_of_turn>": 107}


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "debug-model"
    # A real subprocess: the installed console entry point's module, as a user runs it.
    proc = subprocess.run([sys.executable, "-m", "codegemma", "init", "--preset", "debug", "--out", str(out),
                           "--seed", "7"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote a random debug model" in proc.stdout
    return out


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_directory_layout(init_dir):
    assert sorted(_files(init_dir)) == ["config.json", "generation_config.json", "model.safetensors",
                                        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]


def test_same_seed_gives_identical_bytes_and_other_seed_differs(init_dir, tmp_path):
    assert main(["init", "--out", str(tmp_path / "again"), "--seed", "7"]) == 0
    assert _files(tmp_path / "again") == _files(init_dir)
    assert main(["init", "--out", str(tmp_path / "other"), "--seed", "8"]) == 0
    other = _files(tmp_path / "other")
    assert other["model.safetensors"] != _files(init_dir)["model.safetensors"]
    assert other["tokenizer.json"] == _files(init_dir)["tokenizer.json"]


def test_refuses_non_empty_dir_without_force(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["init", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["init", "--out", str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_unknown_preset_is_one_line_error(tmp_path, capsys):
    assert main(["init", "--preset", "13b", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset '13b'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_transformers_loads_tokenizer_with_gemma_special_ids(init_dir):
    tok = transformers.AutoTokenizer.from_pretrained(init_dir)
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    for text, gemma_id in GEMMA_IDS.items():
        assert tok(text, add_special_tokens=False).input_ids == [gemma_id], text
    assert len(tok) == 512
    prompt = "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>"
    ids = tok(prompt).input_ids
    assert ids[:2] == [2, 67] and ids[-1] == 68 and ids.count(69) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "def add(a, b):\n    \n"


def test_codegemma_and_transformers_agree_on_tokens_and_logits(init_dir):
    from codegemma.tokenizer import Tokenizer

    hf_tok = transformers.AutoTokenizer.from_pretrained(init_dir)
    ours_tok = Tokenizer.load(init_dir)
    texts = ["<|fim_prefix|>import os\n<|fim_suffix|>\nprint(x)<|fim_middle|>",
             "def fibonacci(n):\n    return 42  # ünïcödé ✓", "    x = [1, 22, 333]\n\n"]
    for text in texts:
        assert ours_tok.encode(text, add_bos=True) == hf_tok(text).input_ids
    hf = transformers.AutoModelForCausalLM.from_pretrained(init_dir).eval()
    ours, config = load_model(init_dir, device="cpu")
    assert config.vocab_size == 512
    with torch.no_grad():
        for text in texts:
            tokens = torch.tensor([ours_tok.encode(text, add_bos=True)])
            torch.testing.assert_close(ours(tokens), hf(tokens).logits, atol=1e-5, rtol=0)


def test_large_presets_warn_debug_does_not():
    from codegemma.model.config import get_preset
    from codegemma.model.random_init import size_warning

    assert size_warning("debug", get_preset("debug")) is None
    note = size_warning("7b", get_preset("7b"))
    assert "8,537,680,896 parameters" in note and "17.1 GB" in note
