"""Choosing tokens: each request's sampler chain over its logit rows, and the verification of draft
tokens (lossless speculative sampling).

A batch of logit rows [N, V] holds `Run`s. A run is one request's rows: one row for a plain decode
step, or k + 1 rows for a speculative verification (the next token fed with k drafts; row i is the
distribution after drafts[:i]). `TokenChooser.choose` returns, per run, the tokens to emit: the
drafts accepted and one token more.

Lossless verification. Drafts are deterministic proposals (the slot's previous completion, prompt
lookup): a point-mass draft distribution q. The rejection rule of Leviathan et al. / Chen et al.
then reads: accept draft x with probability p(x), where p is the request's processed distribution
at that position; otherwise emit a token from the residual, p without x, renormalised. We realise
the rule with the coupling plain sampling already uses: the request's generator supplies one
uniform u per emitted token, p's inverse CDF maps u to a token, and the draft is accepted iff it is
that token. Then P(accept) = p(x), and after a rejection the token is distributed as p given
"not x", which is the residual. So the output distribution is exactly that of plain sampling, and
a seeded request even emits the same tokens with drafts on or off (the uniforms are consumed one
per emitted token either way; only floating-point differences between a multi-token pass and
one-token steps can move a boundary). Greedy rows are the limit: the argmax.

The repetition penalty of row i uses the ids seen so far plus drafts[:i]: the history that row has
if it is reached at all (rows after a rejection are never used).

Where the work runs: the chain up to llama.cpp's "infill" sampler runs on the logits' device,
vectorised over rows with the same chain. "infill" (infer/infill.py) compares the text of candidate tokens, so
it and everything after it run in Python on the few candidates left (at most INFILL_CANDIDATES:
llama.cpp compares every pair, so editors put it after top_k), row by row, stopping at a rejection.
A row whose logits are not finite fails its request alone (`Choice.error`); the other runs are
unaffected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from codegemma.infer.infill import InfillSampler, softmax
from codegemma.infer.requests import TokenLogprob
from codegemma.infer.sampling import MAX_TEMPERATURE, SamplingParams

INFILL_CANDIDATES = 1024  # most candidates the infill sampler looks at (the most probable ones)
NEG_INF = float("-inf")


def upload(values, dtype, device) -> torch.Tensor:
    """A host list as a device tensor without waiting for the GPU: a copy from pageable memory
    would synchronise with every kernel queued before it (the forward pass), so the host could not
    prepare the next work while the GPU runs. Pinned memory + non_blocking keeps them overlapped."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)


@dataclass
class Run:
    params: SamplingParams
    start: int  # its first row in the logits
    drafts: list[int]  # row start + i is checked against drafts[i]; len(drafts) + 1 rows in all
    generator: torch.Generator | None = None  # None for greedy requests
    seen_row: int = -1  # its row in the engine's seen-ids mask (repetition penalty), -1 if unused

    @property
    def rows(self) -> int:
        return len(self.drafts) + 1


@dataclass
class Choice:
    tokens: list[int]  # accepted drafts + one more token (empty on error)
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None  # raw model log-softmax (when params.logprobs > 0)
    probs: list[TokenLogprob] | None = None  # the processed distribution, as log-probabilities


def _plan(p: SamplingParams) -> tuple[tuple[str, ...], bool]:
    """(steps to apply, greedy). Greedy needs only the steps that can move the argmax."""
    chain = p.chain
    if p.greedy and "infill" not in chain:
        chain = tuple(s for s in chain if s == "penalties")
    return chain, p.greedy


class TokenChooser:
    def __init__(self, tokenizer=None, stop_ids=()):
        self.infill = InfillSampler(tokenizer, stop_ids)

    # ---- the batch -----------------------------------------------------------------------------
    @torch.inference_mode()
    def choose(self, logits: torch.Tensor, runs: list[Run], seen: torch.Tensor | None = None) -> list[Choice]:
        """logits [N, V] (the rows of all runs); seen [S, V] bool (ids seen, per mask row). Each
        sampled run's generator ends one uniform further per emitted token (untouched if this raises)."""
        states = [r.generator.get_state() if r.generator is not None and not r.params.greedy else None
                  for r in runs]
        try:
            return self._choose(logits, runs, seen, states)
        except BaseException:
            for r, state in zip(runs, states):
                if state is not None:
                    r.generator.set_state(state)
            raise

    def _choose(self, logits, runs, seen, states) -> list[Choice]:
        dev = logits.device
        work = logits.to(torch.float32, copy=True)
        self._bias(work, runs)
        uniforms = [torch.rand(r.rows, generator=r.generator).tolist() if state is not None else None
                    for r, state in zip(runs, states)]
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(runs):
            groups.setdefault(_plan(r.params), []).append(i)
        # Everything the host needs comes back in one transfer: a flag per row for non-finite raw
        # logits (a model failure fails that request alone), then each device group's picks.
        fetch = [(~torch.isfinite(logits).all(-1)).to(torch.int64)]
        device_groups, python_groups = [], []
        for (steps, greedy), members in groups.items():
            rows = upload([j for i in members for j in range(runs[i].start, runs[i].start + runs[i].rows)],
                          torch.int64, dev)
            params = [runs[i].params for i in members for _ in range(runs[i].rows)]
            mask = self._seen_rows(seen, [runs[i] for i in members], dev) if "penalties" in steps else None
            cut = steps.index("infill") if "infill" in steps else len(steps)
            vals, ids, _ = _device_steps(work.index_select(0, rows), None, steps[:cut], params, mask)
            if cut < len(steps):  # infill and what follows run in python on the candidates left
                if vals.shape[1] > INFILL_CANDIDATES:
                    vals, idx = vals.topk(INFILL_CANDIDATES, dim=-1)
                    ids = idx if ids is None else ids.gather(1, idx)
                if ids is None:
                    ids = torch.arange(vals.shape[1], device=dev).expand_as(vals)
                seen_c = mask.gather(1, ids) if mask is not None and "penalties" in steps[cut:] else None
                python_groups.append((members, steps[cut:], greedy, vals, ids, seen_c))
                continue
            us = None if greedy else upload([u for i in members for u in uniforms[i]], torch.float32, dev)
            tok, empty = _pick(vals, ids, us)
            fetch += [tok, empty.to(torch.int64)]
            device_groups.append((members, len(fetch) - 2, vals, ids))
        flat = torch.cat(fetch).tolist()
        parts, o = [], 0
        for f in fetch:
            parts.append(flat[o:o + f.numel()])
            o += f.numel()
        bad = parts[0]
        out: list[Choice] = [Choice([])] * len(runs)
        post: dict[int, tuple] = {}  # run -> its processed rows, for `probs`
        for members, k, vals, ids in device_groups:
            row = 0
            for i in members:
                n = runs[i].rows
                out[i] = self._accept(runs[i], parts[k][row:row + n], parts[k + 1][row:row + n], bad)
                if runs[i].params.logprobs > 0:
                    post[i] = (vals[row:row + n], None if ids is None else ids[row:row + n])
                row += n
        for members, steps, greedy, vals, ids, seen_c in python_groups:
            v_host, i_host = vals.tolist(), ids.tolist()
            s_host = seen_c.tolist() if seen_c is not None else None
            row = 0
            for i in members:
                n = runs[i].rows
                out[i] = self._python_run(runs[i], steps, greedy, v_host[row:row + n], i_host[row:row + n],
                                          s_host[row:row + n] if s_host else None, uniforms[i], bad)
                row += n
        for i, (r, c) in enumerate(zip(runs, out)):
            if states[i] is not None and c.error is None:  # consume one uniform per emitted token
                r.generator.set_state(states[i])
                torch.rand(len(c.tokens), generator=r.generator)
            if r.params.logprobs > 0 and c.error is None:
                self._logprobs(logits, r, c, post.get(i))
        return out

    # ---- pieces of the batch ---------------------------------------------------------------------
    @staticmethod
    def _bias(work: torch.Tensor, runs: list[Run]) -> None:
        rows, toks, vals = [], [], []
        for r in runs:
            for tid, b in r.params.logit_bias:
                for j in range(r.start, r.start + r.rows):
                    rows.append(j)
                    toks.append(tid)
                    vals.append(b)
        if rows:
            dev = work.device
            work.index_put_((upload(rows, torch.int64, dev), upload(toks, torch.int64, dev)),
                            upload(vals, work.dtype, dev), accumulate=True)

    @staticmethod
    def _seen_rows(seen: torch.Tensor | None, members: list[Run], dev) -> torch.Tensor:
        """[n, V] bool: per row, the ids seen before it (the slot's mask + the drafts before it)."""
        base = upload([r.seen_row for r in members for _ in range(r.rows)], torch.int64, dev)
        mask = seen.index_select(0, base)
        rows, toks, row = [], [], 0
        for r in members:
            for i in range(1, r.rows):
                rows += [row + i] * i
                toks += r.drafts[:i]
            row += r.rows
        if rows:
            mask[upload(rows, torch.int64, dev), upload(toks, torch.int64, dev)] = True
        return mask

    def _accept(self, run: Run, picks: list[int], empty: list[int], bad: list[int]) -> Choice:
        m = 0
        while m < len(run.drafts) and picks[m] == run.drafts[m]:
            m += 1
        err = self._row_error(bad[run.start:run.start + m + 1], empty[:m + 1])
        return Choice([], err) if err else Choice(run.drafts[:m] + [picks[m]])

    @staticmethod
    def _row_error(bad: list, empty: list) -> str | None:
        if any(bad):
            return "sampling failed: the model produced non-finite logits for this request"
        if any(empty):
            return "sampling failed: no token is left to choose (logit_bias or the samplers removed every token)"
        return None

    def _python_run(self, run: Run, steps, greedy, vals, ids, seen_c, uniforms, bad) -> Choice:
        tokens: list[int] = []
        probs: list[TokenLogprob] = []
        for i in range(run.rows):
            cands = sorted(((v, t, bool(seen_c[i][j]) if seen_c else False)
                            for j, (v, t) in enumerate(zip(vals[i], ids[i])) if v > NEG_INF),
                           key=lambda c: -c[0])
            for step in steps:
                cands = self._py_step(step, cands, run.params)
            err = self._row_error(bad[run.start + i:run.start + i + 1], [not cands])
            if err:
                return Choice([], err)
            tok = cands[0][1] if greedy else _py_pick(cands, uniforms[i])
            if run.params.logprobs > 0:
                probs.append(TokenLogprob(tok, 0.0, [(tok, 0.0)]) if greedy else _py_probs(cands, tok, run.params.logprobs))
            tokens.append(tok)
            if i == len(run.drafts) or tok != run.drafts[i]:
                break
        return Choice(tokens, probs=probs if run.params.logprobs > 0 else None)

    def _logprobs(self, logits: torch.Tensor, run: Run, c: Choice, post) -> None:
        n, k = len(c.tokens), run.params.logprobs
        chosen = upload(c.tokens, torch.int64, logits.device)[:, None]
        lsm = torch.log_softmax(logits[run.start:run.start + n].float(), dim=-1)
        top_v, top_i = lsm.topk(min(k, lsm.shape[-1]), dim=-1)
        c.logprobs = _items(c.tokens, lsm.gather(1, chosen), top_v, top_i)
        if run.params.greedy:  # greedy keeps one token: probability 1 (llama.cpp's temperature <= 0)
            c.probs = [TokenLogprob(t, 0.0, [(t, 0.0)]) for t in c.tokens]
        elif post is not None:  # device path: the processed distribution of the rows used
            vals, ids = post[0][:n], None if post[1] is None else post[1][:n]
            plsm = torch.log_softmax(vals, dim=-1)
            pv, pi = plsm.topk(min(k, plsm.shape[-1]), dim=-1)
            if ids is None:
                pgot = plsm.gather(1, chosen)
            else:
                pi = ids.gather(1, pi)
                pgot = plsm.masked_fill(ids != chosen, NEG_INF).max(dim=-1, keepdim=True).values
            c.probs = _items(c.tokens, pgot, pv, pi)

    # ---- python steps (infill and what follows it) ----------------------------------------------
    def _py_step(self, step: str, cands: list, p: SamplingParams) -> list:
        """cands: [(logit, id, seen)] sorted by logit, descending."""
        if step == "infill":
            return self.infill(cands)
        if step == "top_k":
            return cands[:p.top_k]
        if step == "top_p":
            probs, keep, before = softmax([c[0] for c in cands]), [], 0.0
            for c, q in zip(cands, probs):
                if before >= p.top_p:
                    break
                keep.append(c)
                before += q
            return keep
        if step == "min_p":
            floor = cands[0][0] + math.log(p.min_p) if cands else 0.0
            return [c for c in cands if c[0] >= floor]
        if step == "temperature":
            t = min(p.temperature, MAX_TEMPERATURE)
            return [(v / t, tid, s) for v, tid, s in cands]
        if step == "penalties":
            r = p.repetition_penalty
            out = [((v / r if v > 0 else v * r) if s else v, tid, s) for v, tid, s in cands]
            return sorted(out, key=lambda c: -c[0])
        raise AssertionError(step)

    # ---- distributions (tests, log-probabilities) ------------------------------------------------
    @torch.inference_mode()
    def distribution(self, logits: torch.Tensor, params: list[SamplingParams],
                     seen: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised distribution each row is sampled from, in vocabulary order, [B, V]
        (one-hot at the choice for greedy rows). seen: [B, V] bool, the ids each row has seen."""
        out = torch.zeros(logits.shape, dtype=torch.float32)
        for b, p in enumerate(params):
            runs = [Run(p, 0, [], None, 0 if seen is not None else -1)]
            steps, greedy = _plan(p)
            row = logits[b:b + 1].to(torch.float32, copy=True)
            self._bias(row, runs)
            mask = self._seen_rows(seen[b:b + 1], runs, row.device) if "penalties" in steps else None
            cut = steps.index("infill") if "infill" in steps else len(steps)
            vals, ids, _ = _device_steps(row, None, steps[:cut], [p], mask)
            ids = torch.arange(vals.shape[1]).expand_as(vals) if ids is None else ids
            cands = sorted(((v, t, bool(mask[0, t]) if mask is not None else False)
                            for v, t in zip(vals[0].tolist(), ids[0].tolist()) if v > NEG_INF), key=lambda c: -c[0])
            for step in steps[cut:]:
                cands = self._py_step(step, cands, p)
            if greedy:
                out[b, cands[0][1]] = 1.0
                continue
            for q, c in zip(softmax([c[0] for c in cands]), cands):
                out[b, c[1]] += q
        return out


# ---- device steps ------------------------------------------------------------------------------------
def _device_steps(vals: torch.Tensor, ids: torch.Tensor | None, steps, params: list[SamplingParams],
                  mask: torch.Tensor | None):
    """Apply `steps` to candidate rows: vals [n, C] logits (-inf = removed), ids [n, C] their token
    ids (None: C is the vocabulary, in order). Returns (vals, ids, sorted descending). A setting
    all rows share is a Python number (no upload, fewer kernels: the usual case of one request)."""
    dev, is_sorted = vals.device, False

    def per_row(values: list, dtype=torch.float32):
        return values[0] if all(v == values[0] for v in values) else upload(values, dtype, dev)[:, None]

    def sort(vals, ids):
        vals, order = vals.sort(dim=-1, descending=True)
        return vals, (order if ids is None else ids.gather(1, order))

    for step in steps:
        if step == "penalties":
            seen = mask if ids is None else mask.gather(1, ids)
            pen = per_row([p.repetition_penalty for p in params])
            vals = torch.where(seen, torch.where(vals > 0, vals / pen, vals * pen), vals)
            if is_sorted:  # penalised logits may change places
                vals, ids = sort(vals, ids)
        elif step == "top_k":
            ks = [p.top_k for p in params]  # from the host: no device read
            kmax, width = max(ks), vals.shape[1]
            if kmax < width:
                if is_sorted:
                    vals, ids = vals[:, :kmax], ids[:, :kmax]
                else:
                    vals, idx = vals.topk(kmax, dim=-1)
                    ids, is_sorted = (idx if ids is None else ids.gather(1, idx)), True
            elif min(ks) < width and not is_sorted:
                (vals, ids), is_sorted = sort(vals, ids), True
            k = per_row(ks, torch.int64)
            if not isinstance(k, int):
                vals = vals.masked_fill(torch.arange(vals.shape[1], device=dev)[None, :] >= k, NEG_INF)
            elif k < vals.shape[1]:
                vals = vals.clone()
                vals[:, k:] = NEG_INF
        elif step == "top_p":
            if not is_sorted:
                (vals, ids), is_sorted = sort(vals, ids), True
            probs = vals.softmax(dim=-1)
            before = probs.cumsum(dim=-1) - probs
            cut = before >= per_row([p.top_p for p in params])
            cut[:, 0] = False  # the most likely token stays (a top_p below fp32's range compares as 0)
            vals = vals.masked_fill(cut, NEG_INF)
        elif step == "min_p":
            floor = vals.max(dim=-1, keepdim=True).values + per_row([math.log(p.min_p) for p in params])
            vals = vals.masked_fill(vals < floor, NEG_INF)
        elif step == "temperature":
            vals = vals / per_row([min(p.temperature, MAX_TEMPERATURE) for p in params])
        else:
            raise AssertionError(step)
    return vals, ids, is_sorted


def _pick(vals: torch.Tensor, ids: torch.Tensor | None, uniforms: torch.Tensor | None):
    """Token per row (argmax if uniforms is None, else the inverse CDF at each uniform) and whether
    the row had no candidate at all."""
    empty = vals.max(dim=-1).values == NEG_INF
    if uniforms is None:
        idx = vals.argmax(dim=-1, keepdim=True)
    else:
        probs = vals.softmax(dim=-1)
        cdf = probs.cumsum(dim=-1)
        idx = torch.searchsorted(cdf, uniforms[:, None].to(cdf.dtype) * cdf[:, -1:], right=True)
        # rounding can put u * total at the very end: take the last token with mass instead
        width = probs.shape[1]
        last = width - 1 - (probs > 0).flip(-1).to(torch.int8).argmax(dim=-1, keepdim=True)
        idx = torch.where(idx >= width, last, idx)
    tok = idx if ids is None else ids.gather(1, idx)
    return tok.squeeze(1), empty


# ---- python helpers -------------------------------------------------------------------------------------
def _py_pick(cands: list, u: float) -> int:
    probs = softmax([c[0] for c in cands])
    target, acc = u * sum(probs), 0.0
    for q, c in zip(probs, cands):
        acc += q
        if acc > target and q > 0:
            return c[1]
    return next(c[1] for q, c in zip(reversed(probs), reversed(cands)) if q > 0)


def _py_probs(cands: list, tok: int, n: int) -> TokenLogprob:
    probs = softmax([c[0] for c in cands])
    lp = {c[1]: (math.log(q) if q > 0 else NEG_INF) for q, c in zip(probs, cands)}
    top = sorted(lp.items(), key=lambda kv: -kv[1])[:n]
    return TokenLogprob(tok, lp.get(tok, NEG_INF), top)


def _items(tokens: list[int], got: torch.Tensor, top_v: torch.Tensor, top_i: torch.Tensor) -> list[TokenLogprob]:
    g, tv, ti = got.squeeze(1).tolist(), top_v.tolist(), top_i.tolist()
    return [TokenLogprob(t, g[j], list(zip(ti[j], tv[j]))) for j, t in enumerate(tokens)]
