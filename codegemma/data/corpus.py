"""Corpus texts for `codegemma tokenizer train`: the same readers and cleaning as `data prepare`.

Files are decoded, quality-filtered and PII-redacted (so no address or key becomes a vocabulary
piece); decontamination and deduplication are skipped, as a tokenizer only learns frequencies.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tqdm import tqdm

from .document import Stats, run_steps
from .filters import FilterConfig, decode_step, quality_step
from .pii import redact_pii
from .readers import limit_plan, plan_sources, read_repository


def corpus_texts(input_path: str | None, limit_mb: float | None = None,
                 filters: FilterConfig | None = None) -> list[str]:
    cfg = filters or FilterConfig()
    stats = Stats()

    def redact(docs, st):
        for d in docs:
            d.text = redact_pii(d.text, st)
            yield d

    steps = [decode_step(cfg), quality_step(cfg), redact]
    texts = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = limit_plan(plan_sources(input_path, Path(tmp), cfg.max_bytes), limit_mb)
        for entry in tqdm(plan, desc="tokenizer corpus", unit="repo", leave=False, disable=None):
            texts.extend(d.text for d in run_steps(steps, read_repository(entry, cfg.max_bytes), stats))
    return texts
