"""`codegemma complete` as a user runs it: repository context, --show-prompt, long files (real
subprocesses, real files), and the Python API building the same prompt."""

from __future__ import annotations

import subprocess
import sys

import pytest

import codegemma
from tests.infer.conftest import model_dir  # noqa: F401  (session fixture: tiny random model dir)

MODELS = "class Price:\n    def __init__(self, cents):\n        self.cents = cents\n"
PRICING = "from shop.models import (\n    Price,\n)\n\n\ndef total(items):\n    return Price(sum(items))\n"
CART = ("from shop.pricing import (\n    total,\n)\nfrom .models import Price as P\n\n\n"
        "def checkout(items):\n    return total(items)\n")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "codegemma", *map(str, args)], capture_output=True,
                          text=True, timeout=300, encoding="utf-8", cwd=cwd)


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "proj"
    for rel, text in {"shop/__init__.py": "", "shop/models.py": MODELS, "shop/pricing.py": PRICING,
                      "shop/cart.py": CART, "docs/unrelated.py": "UNRELATED = 1\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".git").mkdir()
    return root


@pytest.fixture(scope="module")
def cg(model_dir):  # noqa: F811
    with codegemma.load(model_dir, device="cpu") as loaded:
        yield loaded


def test_show_prompt_puts_the_multi_line_imports_ahead_in_packing_order(model_dir, repo, tmp_path):  # noqa: F811
    r = _cli("complete", "--model", model_dir, "shop/cart.py:8:5", "--show-prompt", cwd=repo)
    assert r.returncode == 0, r.stderr
    prefix = CART[:CART.index("return total")]
    suffix = CART[len(prefix):]
    assert r.stdout == (f"<bos>shop/models.py\n{MODELS}<|file_separator|>shop/pricing.py\n{PRICING}"
                        f"<|file_separator|>shop/cart.py\n<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}"
                        "<|fim_middle|>\n")
    assert "UNRELATED" not in r.stdout
    # from another directory the path line is still the file's path in the repository
    elsewhere = _cli("complete", "--model", model_dir, f"{repo}/shop/cart.py:8:5", "--show-prompt", cwd=tmp_path)
    assert elsewhere.returncode == 0 and elsewhere.stdout == r.stdout


def test_no_repo_context_and_context_files(model_dir, repo):  # noqa: F811
    alone = _cli("complete", "--model", model_dir, "shop/cart.py:8:5", "--show-prompt", "--no-repo-context", cwd=repo)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith("<bos>shop/cart.py\n<|fim_prefix|>") and "<|file_separator|>" not in alone.stdout
    extra = _cli("complete", "--model", model_dir, "shop/cart.py:8:5", "--show-prompt",
                 "--context", "docs/unrelated.py", cwd=repo)
    # --context files come after the repository's, nearest the current file
    assert "pricing.py\n" in extra.stdout
    assert extra.stdout.index("pricing.py\n") < extra.stdout.index("docs/unrelated.py\nUNRELATED = 1\n<|file_separator|>")


def test_the_api_builds_the_same_prompt(model_dir, repo, cg):  # noqa: F811
    r = _cli("complete", "--model", model_dir, "shop/cart.py:8:5", "--show-prompt", cwd=repo)
    prefix = CART[:CART.index("return total")]
    prompt = cg.fim_prompt(prefix, CART[len(prefix):], path="shop/cart.py", repo=repo)
    assert cg.prompts.render(prompt) + "\n" == r.stdout
    assert cg.complete(prefix, CART[len(prefix):], path="shop/cart.py", repo=repo, max_new_tokens=4) == \
        cg.run(cg.fim_prompt(prefix, CART[len(prefix):], path="shop/cart.py", repo=repo, max_new_tokens=4),
               max_new_tokens=4)


def test_a_long_file_completes_from_the_cli(model_dir, tmp_path):  # noqa: F811
    """A 100 KB file completes near its end, cut around the cursor as the server cuts it."""
    lines = [f"def f{i}(x):\n    return x + {i}\n\n" for i in range(3500)]
    big = tmp_path / "big.py"
    big.write_text("".join(lines) + "def g(y):\n    \n")
    assert big.stat().st_size > 100_000
    n = len("".join(lines).splitlines()) + 2
    r = _cli("complete", "--model", model_dir, f"big.py:{n}:5", "--max-new-tokens", 8, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "note: prompt cut to fit" in r.stderr and "tokens from the start of the prefix" in r.stderr
    shown = _cli("complete", "--model", model_dir, f"big.py:{n}:5", "--show-prompt", cwd=tmp_path)
    assert shown.stdout.startswith("<bos>big.py\n<|fim_prefix|>") and "def g(y):\n    <|fim_suffix|>" in shown.stdout
    assert "def f0(x)" not in shown.stdout
