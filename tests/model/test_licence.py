"""codegemma.model.licence: the licence a model directory states, never a guess."""

from __future__ import annotations

from codegemma.model.licence import GEMMA_TERMS, model_licence
from codegemma.models import BUILTIN_DIR


def test_builtin_model_is_apache():
    assert model_licence(BUILTIN_DIR) == "Apache-2.0"


def test_gemma_card_and_other_cards(tmp_path):
    (tmp_path / "README.md").write_text("---\nlibrary_name: transformers\nlicense: gemma\n"
                                        "extra_gated_heading: Access CodeGemma on Hugging Face\n---\n\n# CodeGemma\n")
    assert model_licence(tmp_path) == GEMMA_TERMS
    (tmp_path / "README.md").write_text("---\nlicense: other\nlicense_name: acme-1\n"
                                        "license_link: https://acme.test/licence\n---\n")
    assert model_licence(tmp_path) == "acme-1 (https://acme.test/licence)"


def test_licence_file_then_unknown(tmp_path):
    (tmp_path / "README.md").write_text("# no metadata\nlicense: mit is not front matter\n")
    assert model_licence(tmp_path).startswith("unknown")
    (tmp_path / "LICENSE").write_text("MIT License\n\nCopyright ...\n")
    assert model_licence(tmp_path).startswith("MIT License")
    assert model_licence(None).startswith("unknown")
