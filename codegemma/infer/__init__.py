"""Inference: the one decoding loop (engine.py) and what it is made of.

sampling.py (SamplingParams, per-request seeded sampling), detok.py (UTF-8 safe streaming text,
stop strings), prefix.py (slots and prompt-prefix reuse), graphs.py (the decode step, eager or in
CUDA graphs), requests.py (handles, events, Completion). Start from `codegemma.infer.engine.Engine`.
"""
