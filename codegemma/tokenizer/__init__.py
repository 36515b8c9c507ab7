"""Tokenizer loading and the special-token table."""

from codegemma.tokenizer.files import find_tokenizer, locate_tokenizer, tokenizer_files
from codegemma.tokenizer.special import FIM_TOKEN_NAMES, SPECIAL_TOKENS, SpecialToken
from codegemma.tokenizer.tokenizer import Tokenizer, TokenizerError


def train_bpe_tokenizer(texts, vocab_size):
    from codegemma.tokenizer.train import train_bpe_tokenizer as _train

    return _train(texts, vocab_size)


def save_tokenizer_files(tok, out_dir):
    from codegemma.tokenizer.train import save_tokenizer_files as _save

    return _save(tok, out_dir)


__all__ = ["FIM_TOKEN_NAMES", "SPECIAL_TOKENS", "SpecialToken", "Tokenizer", "TokenizerError",
           "find_tokenizer", "locate_tokenizer", "tokenizer_files", "train_bpe_tokenizer", "save_tokenizer_files"]
