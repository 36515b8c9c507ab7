"""codegemma: the CodeGemma system in Python."""

__version__ = "0.1.0"


def load(path=None, device=None, dtype=None, **engine_options):
    """Load a model directory (Hugging Face format) for generation; no path (or "nano") loads the
    built-in model, codegemma-nano. See codegemma.api.load (engine options: max_slots, max_seq_len, compile)."""
    from codegemma.api import load as _load

    return _load(path, device=device, dtype=dtype, **engine_options)
