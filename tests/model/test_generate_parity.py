"""Greedy generation: codegemma (model + cache + engine) against transformers, token for token.
"""

from __future__ import annotations

import pytest
import torch

from codegemma.model.checkpoint import load_model, save_model
from codegemma.model.random_init import init_model_dir

transformers = pytest.importorskip("transformers")

NEW_TOKENS = 32
PROMPTS = ["def fibonacci(n):\n", "import os\n\nclass Stack:\n    def push(self, item):\n        self",
           "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The `codegemma init` debug model with larger random weights: the default init (std 0.02 and a
    tied head) makes a random model repeat one token, which would hide most decoding bugs."""
    out = init_model_dir("debug", tmp_path_factory.mktemp("gen") / "debug", seed=11)
    model, config = load_model(out, device="cpu")
    model.init_weights(11, std=0.3)
    with torch.no_grad():
        model.embed_tokens.weight.mul_(0.02 / 0.3)
    return save_model(model, config, out, tokenizer_dir=out)


@pytest.fixture(scope="module")
def hf(model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return tok, model


def _hf_greedy(hf, prompts: list[str]) -> list[list[int]]:
    """Greedy ids per prompt, cut after the first <eos> (transformers pads finished rows after it)."""
    tok, model = hf
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
    rows = [row.tolist() for row in out[:, batch.input_ids.shape[1]:]]
    return [row[:row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row for row in rows]


def _assert_same_prefix(ours: list[int], stop_token_id, reference: list[int]) -> None:
    """Our ids equal transformers' up to our length. We may stop earlier only on a stop token
    (ours include FIM sentinels and <end_of_turn>; transformers stops on <eos> only)."""
    assert ours == reference[:len(ours)], (ours, reference)
    if len(ours) < len(reference):
        assert stop_token_id == ours[-1], "stopped early without a stop token"
    assert len(ours) > 4  # the test model is made to produce varied, not immediately stopping, text


def _expected_text(cg, reference: list[int]) -> str:
    """transformers' ids as the text codegemma.generate returns: cut before the first stop token and
    decoded in one go (the streamed text equals it, invalid UTF-8 byte pieces of a random model included)."""
    from codegemma.fim.format import stop_token_ids

    stops = set(stop_token_ids(cg.tokenizer))
    cut = next((i for i, t in enumerate(reference) if t in stops), len(reference))
    return cg.tokenizer.decode(reference[:cut])


@pytest.fixture(scope="module")
def cg(model_dir):
    from codegemma import api
    model = api.load(model_dir, device="cpu", dtype=torch.float32)
    yield model
    model.close()


def test_greedy_single_prompt_matches_transformers(cg, hf):
    from codegemma.infer.sampling import SamplingParams

    for prompt in PROMPTS:
        reference = _hf_greedy(hf, [prompt])[0]
        assert cg.generate(prompt, max_new_tokens=NEW_TOKENS, temperature=0.0) == _expected_text(cg, reference)
        # The same through the engine, token for token.
        (completion,) = cg.engine.generate([cg.prompts.text(prompt).ids], SamplingParams(max_new_tokens=NEW_TOKENS))
        _assert_same_prefix(completion.token_ids, completion.stop_token_id, reference)


def test_greedy_batch_of_unequal_lengths_matches_left_padded_transformers(cg, hf):
    from codegemma.infer.sampling import SamplingParams

    reference = _hf_greedy(hf, PROMPTS)  # transformers with left padding and an attention mask
    texts = cg.generate(PROMPTS, max_new_tokens=NEW_TOKENS, temperature=0.0)
    assert texts == [_expected_text(cg, ref) for ref in reference]
    completions = cg.engine.generate([cg.prompts.text(p).ids for p in PROMPTS],
                                     SamplingParams(max_new_tokens=NEW_TOKENS))
    for completion, ref in zip(completions, reference):
        _assert_same_prefix(completion.token_ids, completion.stop_token_id, ref)
