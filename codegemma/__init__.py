"""codegemma: the CodeGemma system in Python."""

__version__ = "0.1.0"


def load(path=None, device=None, dtype=None):
    """Load a model directory (Hugging Face format) for generation; see codegemma.api.load."""
    from codegemma.api import load as _load

    return _load(path, device=device, dtype=dtype)
