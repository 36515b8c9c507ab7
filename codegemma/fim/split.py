"""Training-time FIM split: where to cut a file into prefix / middle / suffix.

The report says CodeGemma chooses split points so the suffix starts at a syntactically natural
place, rather than Bavarian et al.'s uniformly random character positions. Ours:

- Parse the file once with tree-sitter. If it does not parse cleanly (an ERROR node anywhere, an
  unknown language, or no grammar available), fall back to two uniform random character cuts.
- Otherwise walk down from the root, at each level choosing a named child at random with
  probability proportional to sqrt(its size) (big nodes are likelier, small ones still get
  picked). At a node no larger than `max_middle` the walk stops with probability `stop_prob`
  (or always, at a leaf) and the middle is that node, extended over each following named sibling
  with probability `extend_prob` while it fits. The middle is therefore a run of whole sibling
  nodes: it starts where a node starts (after its indentation, like an IDE cursor) and the suffix
  starts exactly where a node ends.
- When that run fills whole lines, with probability `line_prob` the middle is widened to the whole
  lines: from the start of the first line (its indentation included) through the last newline.
  An editor's cursor is as often at column 0 of an empty line as after the indentation, and the
  HumanEval infilling benchmarks cut exactly so (the prefix ends with a newline, the middle is
  `    return x\n`); without this the model never sees a middle that begins with indentation or
  ends with a newline.
- With probability `statement_prob` the middle is instead whole lines of whole statements
  (`_pick_statement`): from a random line, the smallest node that starts at its first character
  and ends at a line end, perhaps extended over the next statements. The walk alone gives a single
  whole line as the middle for about 7% of examples (it mostly stops at identifiers or at whole
  blocks); completing the current line is the commonest thing an IDE asks for, and run-8 of
  codegemma-nano (scripts/nano/README.md) got the indentation of such lines wrong more than
  anything else. With 0.3 about 20% of middles are one whole line and 28% several.
- max_middle = max(32, half the file) bytes, so the middle never swallows the whole file.
- A piece of a long file (`window`, see data/packing.piece_bounds) is split with the tree of the
  whole file: the walk only takes nodes inside the window (descending through those that cross
  its edges), so a piece that starts inside a class body still gets a syntactic split. Parsing
  the piece alone would fail there and fall back to random characters for most of a corpus.

The walk touches one path of the tree (depth x branching), not every node, so the cost is
dominated by the C parse. Parsers come from codegemma.repo.languages.ParserCache (the one place
that loads grammars).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codegemma.repo.languages import ParserCache


@dataclass(frozen=True)
class FimSplit:
    prefix: str
    middle: str
    suffix: str
    syntactic: bool     # False when the character-level fallback was used


def char_split(text: str, rng: np.random.Generator) -> FimSplit:
    """Bavarian et al.: two uniformly random cut points over the characters."""
    i, j = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
    return FimSplit(text[:i], text[i:j], text[j:], False)


def whole_lines(data: bytes, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to whole lines (indentation and final newline) when only whitespace lies
    between it and the line boundaries; otherwise unchanged."""
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", end)
    line_end = len(data) if line_end < 0 else line_end + 1
    if end <= start or data[line_start:start].strip() or data[end:line_end].strip():
        return start, end
    return line_start, line_end


class FimSplitter:
    def __init__(self, stop_prob: float = 0.35, extend_prob: float = 0.3, line_prob: float = 0.5,
                 statement_prob: float = 0.3, parsers: ParserCache | None = None):
        self.statement_prob = statement_prob
        self.stop_prob = stop_prob
        self.extend_prob = extend_prob
        self.line_prob = line_prob
        self.parsers = parsers or ParserCache()
        self._last = None   # (text, language, root, bytes) of the last file parsed

    def split(self, text: str, language: str | None, rng: np.random.Generator,
              window: tuple[int, int] | None = None) -> FimSplit:
        """Split `text` (source in `language`), or the characters [lo, hi) of it when `window` is
        given, into prefix/middle/suffix; see the module doc. The split covers the window only:
        prefix + middle + suffix == text[lo:hi]."""
        lo, hi = window or (0, len(text))
        root, data = self._parse(text, language)
        if root is None or hi <= lo:
            return char_split(text[lo:hi], rng)
        blo = len(text[:lo].encode("utf-8", "surrogatepass"))
        bhi = blo + len(text[lo:hi].encode("utf-8", "surrogatepass"))
        span = self._pick_statement(root, data, blo, bhi, rng) if rng.random() < self.statement_prob else None
        if span is not None:
            start, end = span
        else:
            for _ in range(4):   # a walk into a node crossing the window's edge can dead-end
                span = self._pick_span(root, blo, bhi, rng)
                if span is not None:
                    break
            else:
                return char_split(text[lo:hi], rng)
            start, end = span
        if rng.random() < self.line_prob:
            start, end = whole_lines(data, start, end)
            start, end = max(start, blo), min(end, bhi)
        dec = lambda a, b: data[a:b].decode("utf-8", "surrogatepass")
        return FimSplit(dec(blo, start), dec(start, end), dec(end, bhi), True)

    def _parse(self, text: str, language: str | None):
        """(root node, UTF-8 bytes) of `text`, or (None, None) when it cannot be split syntactically.
        The last file's tree is kept: the pieces of a long file are split one after another."""
        if self._last is not None and self._last[0] is text and self._last[1] == language:
            return self._last[2], self._last[3]
        parser = self.parsers.get(language)
        root = data = None
        if parser is not None and text:
            data = text.encode("utf-8", "surrogatepass")
            root = parser.parse(data).root_node
            if root.has_error or root.named_child_count == 0:
                root = None
        self._last = (text, language, root, data)
        return root, data

    def _pick_statement(self, root, data: bytes, lo: int, hi: int, rng: np.random.Generator,
                        tries: int = 4) -> tuple[int, int] | None:
        """Whole lines holding a run of statements inside [lo, hi): from a random line, the
        smallest node that starts at its first character and ends at the end of a line (a simple
        statement, or a whole compound one), extended over following siblings with `extend_prob`,
        widened to whole lines. None when `tries` random lines give nothing (continuation lines
        of a multi-line expression, comments, blank lines)."""
        max_middle = max(32, (hi - lo) // 2)
        for _ in range(tries):
            pos = int(rng.integers(lo, hi))
            line_start = max(lo, data.rfind(b"\n", lo, pos) + 1)
            line_end = data.find(b"\n", line_start, hi)
            line = data[line_start:hi if line_end < 0 else line_end]
            if not line.strip():
                continue
            first = line_start + len(line) - len(line.lstrip())
            node = root.descendant_for_byte_range(first, first)
            while node is not None and node.start_byte == first:
                if node.is_named and node.end_byte <= hi and node.end_byte - first <= max_middle:
                    after = data.find(b"\n", node.end_byte, hi)
                    if not data[node.end_byte:hi if after < 0 else after].strip():
                        break
                node = node.parent
            else:
                continue
            if not any(chr(b).isalnum() for b in data[first:node.end_byte]):
                continue    # a closing `"""`, `)` or `}` of a construct opened on an earlier line
            start, end = whole_lines(data, node.start_byte, node.end_byte)
            sib = node.next_named_sibling
            while sib is not None and sib.end_byte <= hi and sib.end_byte - start <= max_middle \
                    and rng.random() < self.extend_prob:
                sib_start, sib_end = whole_lines(data, sib.start_byte, sib.end_byte)
                if sib_start != data.rfind(b"\n", 0, sib.start_byte) + 1:
                    break   # not on lines of its own (`a = 1; b = 2`)
                end, sib = sib_end, sib.next_named_sibling
            return max(start, lo), min(end, hi)
        return None

    def _pick_span(self, root, lo: int, hi: int, rng: np.random.Generator) -> tuple[int, int] | None:
        """A run of whole sibling nodes inside the byte window [lo, hi), or None."""
        max_middle = max(32, (hi - lo) // 2)
        node = root
        while True:
            # children overlapping the window; one crossing its edge only if there is more inside
            kids = [c for c in node.named_children
                    if c.end_byte > c.start_byte and c.start_byte < hi and c.end_byte > lo
                    and (c.named_child_count or (c.start_byte >= lo and c.end_byte <= hi))]
            if not kids:
                if node.start_byte >= lo and node.end_byte <= hi:
                    return node.start_byte, node.end_byte
                return None
            sizes = np.array([min(c.end_byte, hi) - max(c.start_byte, lo) for c in kids], dtype=np.float64)
            weights = np.sqrt(sizes)
            k = int(rng.choice(len(kids), p=weights / weights.sum()))
            child = kids[k]
            inside = child.start_byte >= lo and child.end_byte <= hi
            small = inside and sizes[k] <= max_middle
            is_leaf = child.named_child_count == 0
            if small and (is_leaf or rng.random() < self.stop_prob):
                start, end = child.start_byte, child.end_byte
                j = k + 1
                while (j < len(kids) and kids[j].end_byte <= hi and rng.random() < self.extend_prob
                       and kids[j].end_byte - start <= max_middle):
                    end = kids[j].end_byte
                    j += 1
                return start, end
            if is_leaf:
                # a single leaf bigger than max_middle (e.g. a huge string): a cut inside it is
                # no better than the character fallback, so cut at its boundaries instead
                return child.start_byte, child.start_byte
            node = child
