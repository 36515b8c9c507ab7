"""FIM: syntactic split points, the character fallback, rates, and decoding back to the file."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from codegemma.data.document import Document, Stats
from codegemma.data.packing import Chunk, FimConfig, RepositoryPacker, file_pieces, file_rng, piece_bounds
from codegemma.data.prepare import repository_order
from codegemma.fim.format import FILE_SEPARATOR, parse_fim
from codegemma.fim.prompt import PromptBuilder
from codegemma.fim.split import FimSplitter, char_split, whole_lines
from codegemma.tokenizer import Tokenizer

PY = '''import os


def area(w, h):
    """Area of a rectangle."""
    if w < 0 or h < 0:
        raise ValueError("negative")
    return w * h


class Box:
    def __init__(self, w, h):
        self.w = w
        self.h = h

    def size(self):
        return area(self.w, self.h)
'''


def _require_grammar(language: str) -> None:
    # grammars come from tree_sitter_language_pack (downloads) or the tree_sitter_<lang> wheels
    if FimSplitter().parsers.get(language) is None:
        pytest.skip(f"no tree-sitter grammar for {language} here (pip install tree-sitter-{language.replace('_', '-')})")


def _node_boundaries(text: str, language: str) -> tuple[set, set]:
    parser = FimSplitter().parsers.get(language)
    tree = parser.parse(text.encode())
    starts, ends = set(), set()
    stack = [tree.root_node]
    while stack:
        n = stack.pop()
        starts.add(n.start_byte)
        ends.add(n.end_byte)
        stack.extend(n.children)
    return starts, ends


@pytest.mark.parametrize("language,text", [
    ("python", PY),
    ("go", "package m\n\nfunc Add(a int, b int) int {\n\tc := a + b\n\treturn c\n}\n"),
    ("java", "class A {\n  int f(int x) {\n    int y = x * 2;\n    return y + 1;\n  }\n}\n"),
    ("rust", "fn add(a: i32, b: i32) -> i32 {\n    let c = a + b;\n    c * 2\n}\n"),
    ("typescript", "export function f(x: number): number {\n  const y = x * 2;\n  return y;\n}\n"),
])
def test_middle_is_whole_nodes_and_suffix_starts_at_a_node_end(language, text):
    _require_grammar(language)
    splitter = FimSplitter(line_prob=0.0, statement_prob=0.0)
    starts, ends = _node_boundaries(text, language)
    rng = np.random.default_rng(0)
    for _ in range(40):
        s = splitter.split(text, language, rng)
        assert s.syntactic
        assert s.prefix + s.middle + s.suffix == text
        cut1, cut2 = len(s.prefix.encode()), len((s.prefix + s.middle).encode())
        assert cut1 in starts and cut2 in ends
        assert s.middle.strip() or not s.middle


def test_whole_line_middles_take_indentation_and_newline():
    assert whole_lines(b"def f():\n    return 1\nx = 2\n", 13, 21) == (9, 22)   # `return 1`
    assert whole_lines(b"def f():\n    return 1", 13, 21) == (9, 21)             # last line, no newline
    assert whole_lines(b"x = f(a, b)\n", 6, 7) == (6, 7)                           # `a`: not whole lines
    _require_grammar("python")
    starts, ends = _node_boundaries(PY, "python")
    rng = np.random.default_rng(3)
    widened = 0
    for _ in range(60):
        s = FimSplitter(line_prob=1.0).split(PY, "python", rng)
        assert s.prefix + s.middle + s.suffix == PY
        cut1, cut2 = len(s.prefix), len(s.prefix + s.middle)
        if cut1 in starts and cut2 in ends:
            continue
        widened += 1   # the widened middle: whole lines around a run of nodes
        assert s.prefix == "" or s.prefix.endswith("\n")
        assert s.middle.endswith("\n")
        core = s.middle.strip()
        assert cut1 + s.middle.index(core) in starts and cut1 + s.middle.index(core) + len(core) in ends
    assert widened > 20


def test_unparsable_files_use_the_character_fallback():
    _require_grammar("python")
    splitter = FimSplitter()
    rng = np.random.default_rng(1)
    broken = "def f(:\n    return )(\n"
    s = splitter.split(broken, "python", rng)
    assert not s.syntactic and s.prefix + s.middle + s.suffix == broken
    s = splitter.split("some text", None, rng)
    assert not s.syntactic and s.prefix + s.middle + s.suffix == "some text"
    c = char_split("abcdef", np.random.default_rng(2))
    assert c.prefix + c.middle + c.suffix == "abcdef"


def test_fim_rate_and_spm_share_within_bounds(corpus_tokenizer):
    tok = Tokenizer.load(corpus_tokenizer)
    n = 1500
    docs = [Document("r", f"m{i:04d}.py", f"def f{i}(x):\n    return x + {i}\n", "python") for i in range(n)]
    for fim_rate, spm_rate in ((0.9, 0.5), (0.5, 0.2)):
        stats = Stats()
        packer = RepositoryPacker(tok, FimConfig(fim_rate, spm_rate), seed=7)
        packer.render(packer.arrange(docs, stats), stats)
        fim = stats.counts["count/fim_psm"] + stats.counts["count/fim_spm"]
        assert fim + stats.counts["count/plain_files"] == n
        # 5 standard deviations of the binomial: fails by chance with probability < 1e-6
        assert abs(fim - n * fim_rate) < 5 * math.sqrt(n * fim_rate * (1 - fim_rate))
        spm = stats.counts["count/fim_spm"]
        assert abs(spm - fim * spm_rate) < 5 * math.sqrt(fim * spm_rate * (1 - spm_rate))


def test_path_rate_drops_the_path_line_of_that_share_of_fim_examples_only(corpus_tokenizer):
    _require_grammar("python")
    tok = Tokenizer.load(corpus_tokenizer)
    files = {f"pkg/m{i:03d}.py": PY.replace("area", f"area{i}") for i in range(400)}
    docs = [Document("repo", p, t, "python") for p, t in files.items()]
    stats = Stats()
    packer = RepositoryPacker(tok, FimConfig(0.8, 0.5, path_rate=0.25), seed=2)
    chunks = [c.rendered() for c in packer.render(packer.arrange(docs, stats), stats)]
    fim = [c for c in chunks if "<|fim_middle|>" in c]
    plain = [c for c in chunks if "<|fim_middle|>" not in c]
    no_path = [c for c in fim if parse_fim(c)["path"] is None]
    assert stats.counts["count/fim_without_path"] == len(no_path)
    assert abs(len(no_path) - 0.75 * len(fim)) < 5 * math.sqrt(len(fim) * 0.75 * 0.25)
    assert no_path[0].startswith(("<|fim_prefix|>", "<|fim_suffix|>"))
    assert all(c.split("\n", 1)[0] in files for c in plain)     # plain files keep their path line
    # the default (every path kept) draws nothing extra: the same output as before the option
    keep = RepositoryPacker(tok, FimConfig(0.8, 0.5), seed=2)
    assert all(parse_fim(c.rendered())["path"] in files for c in keep.render(keep.arrange(docs, Stats()), Stats())
               if "<|fim_middle|>" in c)


def test_statement_rate_sets_the_share_of_whole_line_middles(corpus_tokenizer):
    _require_grammar("python")
    tok = Tokenizer.load(corpus_tokenizer)
    docs = [Document("repo", f"m{i:03d}.py", PY.replace("area", f"area{i}"), "python") for i in range(300)]

    def whole_line_share(rate: float) -> float:
        packer = RepositoryPacker(tok, FimConfig(1.0, 0.0, statement_rate=rate), seed=4)
        mids = [parse_fim(c.rendered())["middle"] for c in packer.render(packer.arrange(docs, Stats()), Stats())]
        return sum(m.endswith("\n") and (m[:1].isspace() or m[:1].isalpha()) for m in mids) / len(mids)

    assert whole_line_share(0.9) > whole_line_share(0.0) + 0.3


def test_fim_rates_outside_zero_one_name_their_flag():
    with pytest.raises(ValueError, match="--fim-path-rate"):
        FimConfig(path_rate=1.5)
    with pytest.raises(ValueError, match="--fim-statement-rate"):
        FimConfig(statement_rate=-0.1)


def test_every_fim_document_decodes_back_to_its_file(corpus_tokenizer):
    _require_grammar("python")
    tok = Tokenizer.load(corpus_tokenizer)
    files = {f"pkg/mod{i}.py": PY.replace("area", f"area{i}") for i in range(30)}
    files["pkg/notes.go"] = "package pkg\n\nfunc Broken( {\n"          # does not parse: fallback
    docs = [Document("repo", p, t, "go" if p.endswith(".go") else "python") for p, t in files.items()]
    stats = Stats()
    tokens = RepositoryPacker(tok, FimConfig(0.9, 0.5), seed=1).pack(docs, stats)
    assert tokens[0] == tok.bos_id and tokens[-1] == tok.eos_id
    text = tok.decode(tokens[1:-1].tolist())
    seen = {}
    for chunk in text.split(FILE_SEPARATOR):
        if "<|fim_prefix|>" in chunk:
            f = parse_fim(chunk)
            body = f["prefix"] + f["middle"] + f["suffix"]
            seen[f["path"]] = body
        else:
            path, _, body = chunk.partition("\n")
            seen[path] = body
    assert seen == files
    assert stats.counts["count/fim_syntactic"] >= 20


def test_tokens_are_what_inference_encodes_and_special_texts_stay_text(corpus_tokenizer):
    # A repository pack whose last chunk is a FIM example has exactly the ids the prompt builder
    # makes for that example with the earlier files as context: training and serving agree.
    tok = Tokenizer.load(corpus_tokenizer)
    builder = PromptBuilder(tok, n_ctx=100_000)
    packer = RepositoryPacker(tok, FimConfig(), seed=0)
    files = [Chunk(f"pkg/m{i}.py", PY.replace("area", f"area{i}")) for i in range(3)]
    for mode, path in (("psm", "pkg/cur.py"), ("spm", "pkg/cur.py"), ("psm", None)):
        current = Chunk(path, mode=mode, prefix=PY[:120], suffix=PY[160:], middle=PY[120:160])
        prompt = builder.fim(current.prefix, current.suffix, path=path, mode=mode, middle=current.middle,
                             context=[(c.path, c.text) for c in files], max_new_tokens=0)
        assert packer.encode([*files, current], Stats()).tolist() == [*prompt.ids, tok.eos_id]
    # a file name or text that spells control tokens is encoded as its characters
    # a file name or text that spells control tokens is encoded as its characters
    special = "<eos> <bos> <|fim_prefix|> <|fim_middle|> <|fim_suffix|> <|file_separator|>"
    path, text = "<eos><|fim_middle|>.py", PY + f"S = '{special}'\n"
    control = {i for i, t in tok.backend.get_added_tokens_decoder().items() if t.special}
    pre, suf, mid = (tok.token_id(n) for n in ("fim_prefix", "fim_suffix", "fim_middle"))
    shapes = set()
    for seed in range(8):
        packer = RepositoryPacker(tok, FimConfig(0.5, 0.5), seed=seed)
        tokens = packer.pack([Document("repo", path, text, "python")], Stats()).tolist()
        assert tokens[0] == tok.bos_id and tokens[-1] == tok.eos_id
        marks = [i for i, t in enumerate(tokens[1:-1], 1) if t in control]
        shapes.add(tuple(tokens[i] for i in marks))
        first = marks[0] if marks else len(tokens) - 1
        assert tok.decode(tokens[1:first]) == (f"{path}\n" if marks else f"{path}\n{text}")
    assert shapes == {(), (pre, suf, mid), (suf, pre, mid)}


def test_file_pieces_cut_at_top_level_lines_and_lose_nothing():
    assert file_pieces("short\n", 100) == ["short\n"]
    text = "".join(f"def f{i}(x):\n    y = x + {i}\n    return y\n\n" for i in range(60))
    pieces = file_pieces(text, 300)
    assert "".join(pieces) == text and len(pieces) > 5
    assert all(len(p) <= 300 for p in pieces)
    assert all(p.startswith("def f") for p in pieces)          # cut before top-level statements
    no_top = "".join(f"    line {i}\n" for i in range(100))    # no column-0 line: any line end
    pieces = file_pieces(no_top, 200)
    assert "".join(pieces) == no_top and all(len(p) <= 200 and p.endswith("\n") for p in pieces)
    assert file_pieces("x" * 500 + "\nend\n", 100) == ["x" * 500 + "\n", "end\n"]  # a long line stays whole


def test_long_files_become_pieces_that_each_fit_a_sequence(corpus_tokenizer):
    _require_grammar("python")
    tok = Tokenizer.load(corpus_tokenizer)
    body = "".join(PY.replace("area", f"area{i}").replace("import os\n", "") for i in range(40))
    docs = [Document("repo", "pkg/big.py", body, "python")]
    stats = Stats()
    packer = RepositoryPacker(tok, FimConfig(0.9, 0.5, max_chars=1500), seed=3)
    chunks = [c.rendered() for c in packer.render(packer.arrange(docs, stats), stats)]
    assert len(chunks) > 5 and stats.counts["count/files_cut_into_pieces"] == 1
    texts = []
    for chunk in chunks:
        if "<|fim_prefix|>" in chunk:
            f = parse_fim(chunk)
            assert f["path"] == "pkg/big.py"
            texts.append(f["prefix"] + f["middle"] + f["suffix"])
        else:
            path, _, text = chunk.partition("\n")
            assert path == "pkg/big.py"
            texts.append(text)
    assert "".join(texts) == body and all(len(t) <= 1500 for t in texts)
    assert stats.counts["count/fim_syntactic"] >= len(chunks) // 2  # pieces still parse


def test_same_seed_same_tokens_whatever_the_file_order(corpus_tokenizer):
    tok = Tokenizer.load(corpus_tokenizer)
    docs = [Document("repo", f"m{i}.py", PY.replace("area", f"a{i}"), "python") for i in range(8)]
    a = RepositoryPacker(tok, FimConfig(), seed=5).pack(docs, Stats())
    b = RepositoryPacker(tok, FimConfig(), seed=5).pack(list(reversed(docs)), Stats())
    c = RepositoryPacker(tok, FimConfig(), seed=6).pack(docs, Stats())
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_pieces_of_a_long_file_get_syntactic_splits_from_the_whole_files_tree(corpus_tokenizer):
    # one big class: no piece but the first starts at column 0
    _require_grammar("python")
    doc = "".join(f"        line {j} of a long docstring\n" for j in range(12))
    methods = "".join(f'    def m{i}(self, x):\n        """Doc.\n\n{doc}        """\n'
                      f"        y = x * {i}\n        return y + self.k\n\n" for i in range(40))
    text = "class Big:\n    k = 1\n\n" + methods
    bounds = piece_bounds(text, 600)
    assert len(bounds) > 5 and "".join(text[a:b] for a, b in bounds) == text
    assert all(b - a <= 600 for a, b in bounds)
    starts, ends = _node_boundaries(text, "python")
    splitter = FimSplitter(line_prob=0.0, statement_prob=0.0)
    rng = np.random.default_rng(5)
    parser = FimSplitter().parsers.get("python")
    alone = [parser.parse(text[lo:hi].encode()).root_node.has_error for lo, hi in bounds[1:]]
    assert sum(alone) >= len(alone) // 2     # most are cut inside a docstring: no parse alone
    for lo, hi in bounds[1:]:
        for _ in range(10):
            s = splitter.split(text, "python", rng, window=(lo, hi))
            assert s.syntactic
            assert s.prefix + s.middle + s.suffix == text[lo:hi]
            cut1, cut2 = lo + len(s.prefix), lo + len(s.prefix) + len(s.middle)
            assert cut1 in starts and cut2 in ends
    # and through the packer: every FIM piece is split syntactically, none falls back
    tok = Tokenizer.load(corpus_tokenizer)
    stats = Stats()
    packer = RepositoryPacker(tok, FimConfig(1.0, 0.5, max_chars=600), seed=0)
    packer.render(packer.arrange([Document("r", "big.py", text, "python")], stats), stats)
    assert stats.counts["count/file_pieces"] == len(bounds)
    assert stats.counts["count/fim_syntactic"] == len(bounds)
    assert "count/fim_char_fallback" not in stats.counts


def test_windowed_split_is_utf8_safe():
    _require_grammar("python")
    text = "".join(f"def f{i}():\n    return 'é{i}ü'\n\n" for i in range(40))
    rng = np.random.default_rng(2)
    for lo, hi in piece_bounds(text, 200):
        for _ in range(5):
            s = FimSplitter().split(text, "python", rng, window=(lo, hi))
            assert s.syntactic and s.prefix + s.middle + s.suffix == text[lo:hi]


def test_statement_middles_are_whole_lines_of_whole_statements():
    _require_grammar("python")
    starts, ends = _node_boundaries(PY, "python")
    rng = np.random.default_rng(11)
    lines = 0
    for _ in range(60):
        s = FimSplitter(statement_prob=1.0, line_prob=0.0).split(PY, "python", rng)
        assert s.syntactic and s.prefix + s.middle + s.suffix == PY
        assert s.prefix == "" or s.prefix.endswith("\n")
        assert s.middle.endswith("\n") and any(c.isalnum() for c in s.middle)
        core = s.middle.strip()
        at = len(s.prefix) + s.middle.index(core)
        assert at in starts and at + len(core) in ends      # a run of whole nodes, nothing cut
        lines += s.middle.count("\n") == 1
    assert lines >= 15      # single lines (`return w * h`) are common, not only whole blocks


def test_pass_zero_keeps_the_single_pass_seeding():
    # the keys every data set before --fim-passes was made with: pass 0 must not change them, or
    # `data prepare` without the option would stop reproducing earlier output
    def legacy_rng(seed, repo, path):
        digest = hashlib.sha256(f"{seed}\0{repo}\0{path}".encode()).digest()
        return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32))

    for seed, repo, path in ((0, "r", "a.py"), (3, "site-packages/numpy", "linalg/linalg.py")):
        assert file_rng(seed, repo, path).random(4).tolist() == legacy_rng(seed, repo, path).random(4).tolist()
        assert file_rng(seed, repo, path, 1).random(4).tolist() != legacy_rng(seed, repo, path).random(4).tolist()
    names = [f"repo{i}" for i in range(12)]
    legacy = sorted(names, key=lambda r: hashlib.sha256(f"{7}\0{r}".encode()).hexdigest())
    assert repository_order(names, 7) == repository_order(names, 7, 0) == legacy
    assert repository_order(names, 7, 1) != legacy


def test_each_pass_renders_the_same_files_with_its_own_decisions(corpus_tokenizer):
    tok = Tokenizer.load(corpus_tokenizer)
    docs = [Document("repo", f"m{i}.py", PY.replace("area", f"a{i}"), "python") for i in range(12)]
    packer = RepositoryPacker(tok, FimConfig(0.9, 0.5), seed=5)
    arranged_stats, s0, s1 = Stats(), Stats(), Stats()
    arranged = packer.arrange(docs, arranged_stats)
    p0, p1 = packer.render(arranged, s0, fim_pass=0), packer.render(arranged, s1, fim_pass=1)
    assert p0 == packer.render(arranged, Stats()) and p1 != p0
    assert sum(a != b for a, b in zip(p0, p1)) >= len(p0) // 2
    # pass 0 of an arranged repository is what `pack` has always made
    assert np.array_equal(packer.encode(p0, Stats()), packer.pack(docs, Stats()))
    assert not np.array_equal(packer.encode(p1, Stats()), packer.pack(docs, Stats()))

    def files(chunks):
        out = {}
        for chunk in (c.rendered() for c in chunks):
            if "<|fim_prefix|>" in chunk:
                f = parse_fim(chunk)
                out[f["path"]] = f["prefix"] + f["middle"] + f["suffix"]
            else:
                path, _, body = chunk.partition("\n")
                out[path] = body
        return out

    assert files(p0) == files(p1) == {d.path: d.text for d in docs}
    # counts of decisions come from each rendering, counts of files from arranging (once)
    for s in (s0, s1):
        assert s.counts["count/fim_psm"] + s.counts["count/fim_spm"] + s.counts.get("count/plain_files", 0) == 12
        assert not any("files_packed" in k or "file_chars_log2" in k for k in s.counts)
    assert arranged_stats.counts["count/files_packed"] == 12
    assert not any(k.startswith("count/fim") for k in arranged_stats.counts)
