"""Repository context from real files on disk: the root, which files are read, bounds, the context."""

import os
import subprocess

import pytest

from codegemma.fim.prompt import PromptBuilder
from codegemma.models import resolve_model
from codegemma.repo.checkout import find_repository_root, read_repository, repository_path
from codegemma.repo.context import repository_context
from codegemma.tokenizer import Tokenizer

CART = ("from shop.pricing import (\n    total,\n    discount,\n)\nfrom .models import (\n    Item,\n)\n\n"
        "def checkout(items):\n    return total(items) - discount(items)\n")
PRICING = "from .models import (\n    Item,\n    Price,\n)\n\ndef total(items):\n    return sum(p.value for p in items)\n"
MODELS = "class Item:\n    pass\n\n\nclass Price:\n    value = 0\n"
API = "from shop.cart import (\n    checkout,\n)\n\ncheckout([])\n"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load(resolve_model(None))


def counter(tok):
    return lambda s: len(tok.encode(s, parse_special=False))


def write(root, rel, content):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture
def repo(tmp_path):
    """A checkout with source files, and every kind of file that must not be read."""
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    write(root, ".git/hooks/hook.py", "import os\n")
    write(root, "shop/cart.py", CART)
    write(root, "shop/pricing.py", PRICING)
    write(root, "shop/models.py", MODELS)
    write(root, "shop/api.py", API)
    write(root, "shop/crlf.py", b"x = 1\r\ny = 2\r\n")
    write(root, "shop/binary.py", b"x = 1\n\x00\x01\x02")
    write(root, "shop/latin1.py", "name = 'caf\u00e9'\n".encode("latin-1"))
    write(root, "shop/huge.py", "x = 1\n" * 200_000)            # 1.2 MB: over the 1 MB limit
    write(root, "shop/notes.txt", "not source\n")
    write(root, "node_modules/pkg/index.js", "module.exports = 1\n")
    write(root, "build/gen.py", "y = 1\n")
    write(root, ".venv/lib/site.py", "z = 1\n")
    write(root, ".hidden/tool.py", "w = 1\n")
    write(root, "docs/conf.py", "project = 'x'\n")
    outside = tmp_path / "outside"
    write(outside, "secret.py", "TOKEN = 'do not read'\n")
    os.symlink(outside / "secret.py", root / "shop" / "link.py")
    os.symlink(outside, root / "linked_dir")
    os.mkfifo(root / "shop" / "fifo.py")
    return root


def test_repository_root_is_the_nearest_git_directory_or_file(tmp_path, repo):
    assert find_repository_root(repo / "shop" / "cart.py") == repo
    assert find_repository_root(repo / "shop") == repo
    sub = repo / "vendor_sub"
    write(sub, ".git", "gitdir: ../.git/modules/vendor_sub\n")       # a submodule / worktree
    write(sub, "lib.py", "x = 1\n")
    assert find_repository_root(sub / "lib.py") == sub
    assert find_repository_root(tmp_path / "outside" / "secret.py") is None
    assert repository_path(repo / "shop" / "cart.py") == (repo, "shop/cart.py")
    assert repository_path(tmp_path / "outside" / "secret.py") is None


def test_a_real_git_worktree_is_found(tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(main)], check=True)
    write(main, "a.py", "x = 1\n")
    subprocess.run([*git, "-C", str(main), "add", "a.py"], check=True)
    subprocess.run([*git, "-C", str(main), "commit", "-qm", "a"], check=True)
    subprocess.run([*git, "-C", str(main), "worktree", "add", "-q", str(tmp_path / "wt")], check=True)
    assert (tmp_path / "wt" / ".git").is_file()
    assert find_repository_root(tmp_path / "wt" / "a.py") == tmp_path / "wt"


def test_only_source_files_inside_the_root_are_read(repo):
    files = read_repository(repo, repo / "shop" / "cart.py")
    assert sorted(files) == ["docs/conf.py", "shop/api.py", "shop/cart.py", "shop/crlf.py",
                             "shop/models.py", "shop/pricing.py"]
    assert files["shop/cart.py"] == CART
    assert files["shop/crlf.py"] == "x = 1\ny = 2\n"             # one newline convention, as the corpus
    assert all("do not read" not in t for t in files.values())
    with pytest.raises(ValueError, match="not inside the repository"):
        read_repository(repo / "shop", repo / "docs" / "conf.py")


def test_bounds_keep_the_files_nearest_the_current_one(repo):
    write(repo, "shop/sub/deep.py", "d = 1\n")
    near = read_repository(repo, repo / "shop" / "cart.py", max_files=5)
    assert sorted(near) == ["shop/api.py", "shop/cart.py", "shop/crlf.py", "shop/models.py", "shop/pricing.py"]
    # the current directory's files, then its subdirectories, then the rest of the repository
    assert list(read_repository(repo, repo / "shop" / "cart.py", max_files=7))[5:] == ["shop/sub/deep.py", "docs/conf.py"]
    small = read_repository(repo, repo / "shop" / "cart.py", max_bytes=len(API) + len(CART))
    assert sorted(small) == ["shop/api.py", "shop/cart.py"]
    # a bound on directory entries looked at: docs/ first (1 entry), then 2 entries of the root
    assert list(read_repository(repo, repo / "docs", max_entries=3)) == ["docs/conf.py"]
    assert len(read_repository(repo, repo / "docs", max_entries=100)) == 7


def test_context_is_the_dependencies_in_packing_order_within_the_token_budget(repo, tok):
    count = counter(tok)
    # path line + text + <|file_separator|>
    cost = {p: count(p + "\n") + count(t) + 1 for p, t in
            [("shop/models.py", MODELS), ("shop/pricing.py", PRICING), ("shop/api.py", API), ("shop/cart.py", CART)]}
    both = cost["shop/models.py"] + cost["shop/pricing.py"]
    ctx = repository_context(repo / "shop" / "cart.py", both, count)
    assert ctx == [("shop/models.py", MODELS), ("shop/pricing.py", PRICING)]
    # api.py imports cart.py: it comes after the dependencies, when there is room
    wider = repository_context(repo / "shop" / "cart.py", both + cost["shop/api.py"], count)
    assert [p for p, _ in wider] == ["shop/models.py", "shop/pricing.py", "shop/api.py"]
    # nearest first: api.py's direct import cart.py takes the budget, though models.py is smaller
    assert cost["shop/models.py"] < cost["shop/cart.py"]
    assert [p for p, _ in repository_context(repo / "shop" / "api.py", cost["shop/cart.py"], count)] == ["shop/cart.py"]
    assert repository_context(repo / "shop" / "cart.py", 0, count) == []


def test_context_fills_the_prompt_builders_room_exactly(repo, tok):
    # the budget is what the prompt builder leaves for other files; the context it gets back then
    # goes in whole, never cut or dropped, because both count a file the same way
    prefix, suffix = CART[:CART.index("    return")], CART[CART.index("    return"):]
    shown = []
    for n_ctx in range(80, 248, 4):
        builder = PromptBuilder(tok, n_ctx)
        room = builder.context_room(prefix, suffix, path="shop/cart.py", max_new_tokens=16)
        ctx = repository_context(repo / "shop" / "cart.py", room, counter(tok))
        prompt = builder.fim(prefix, suffix, path="shop/cart.py", context=ctx, max_new_tokens=16)
        assert not prompt.cut, (n_ctx, prompt.cut.describe())
        shown.append(len(ctx))
    assert shown[0] == 0 and shown[-1] == 5     # none fit, then all 5 other source files


def test_context_uses_the_editor_text_and_works_for_an_unsaved_file(repo, tok):
    count = counter(tok)
    unsaved = "from shop.models import (\n    Price,\n)\n\nPrice()\n"
    assert repository_context(repo / "shop" / "new.py", 10_000, count, text=unsaved)[0] == ("shop/models.py", MODELS)
    # the editor's text wins over the file on disk: cart.py now imports only api.py
    api_cost = count("shop/api.py\n") + count(API) + 1
    ctx = repository_context(repo / "shop" / "cart.py", api_cost, count, text="from shop import (\n    api,\n)\napi.x\n")
    assert [p for p, _ in ctx] == ["shop/api.py"]


def test_no_context_outside_a_repository(tmp_path):
    write(tmp_path / "loose", "a.py", "from b import (\n  c,\n)\n")
    write(tmp_path / "loose", "b.py", "c = 1\n")
    assert repository_context(tmp_path / "loose" / "a.py", 10_000, len) == []
