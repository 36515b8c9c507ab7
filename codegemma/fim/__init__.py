"""FIM and chat prompt formats (format.py) and the training-time document split (split.py)."""
