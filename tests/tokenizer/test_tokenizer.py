import json

import pytest

from codegemma.tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerError, train_bpe_tokenizer
from codegemma.tokenizer.train import MIN_VOCAB, save_tokenizer_files
from tests.conftest import SAMPLE_CODE


def test_special_tokens_sit_at_gemma_ids(small_tokenizer_dir):
    tok = Tokenizer.load(small_tokenizer_dir)
    for name, special in SPECIAL_TOKENS.items():
        assert tok.token_id(name) == special.gemma_id, name
    assert tok.encode("\n") == [108]
    assert tok.vocab_size == 512


def test_each_special_text_encodes_as_one_control_token(small_tokenizer_dir):
    tok = Tokenizer.load(small_tokenizer_dir)
    for special in SPECIAL_TOKENS.values():
        ids = tok.encode(f"x{special.text}y")
        assert ids == [*tok.encode("x"), special.gemma_id, *tok.encode("y")]
        assert tok.encode(special.text) == [special.gemma_id]


@pytest.mark.parametrize("text", [SAMPLE_CODE, "tab\tand  two spaces  ", "unicode: héllo → 世界 🙂", "x = 12345\n\n\n"])
def test_decode_inverts_encode(small_tokenizer_dir, text):
    tok = Tokenizer.load(small_tokenizer_dir)
    ids = tok.encode(text, add_bos=True)
    assert ids[0] == tok.bos_id
    assert tok.decode(ids[1:]) == text
    assert tok.encode_batch([text, "a"], add_bos=True)[0] == ids


def test_training_is_deterministic_and_sized():
    texts = [SAMPLE_CODE, "def other():\n    return 42\n"]
    a, b = train_bpe_tokenizer(texts, 600), train_bpe_tokenizer(texts, 600)
    assert a.to_str() == b.to_str()
    assert a.get_vocab_size() == 600
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        train_bpe_tokenizer(texts, MIN_VOCAB)


def test_transformers_loads_the_same_ids(small_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(small_tokenizer_dir))
    tok = Tokenizer.load(small_tokenizer_dir)
    text = "<|fim_prefix|>def f(x):<|fim_suffix|>\n    return y<|fim_middle|>"
    assert hf(text)["input_ids"] == tok.encode(text, add_bos=True)
    chat = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"


def _sentencepiece_tokenizer(tmp_path) -> Tokenizer:
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SAMPLE_CODE * 5)
    user_symbols = [s.text for s in SPECIAL_TOKENS.values() if s.name not in ("pad", "eos", "bos", "unk")]
    spm.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=400, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=user_symbols, byte_fallback=True,
        add_dummy_prefix=False, minloglevel=2)
    return Tokenizer.load(tmp_path / "tokenizer.model")


def test_sentencepiece_fallback(tmp_path):
    tok = _sentencepiece_tokenizer(tmp_path)
    assert tok.has_fim
    ids = tok.encode("<|fim_prefix|>def add(a, b):<|fim_suffix|>")
    assert ids[0] == tok.token_id("fim_prefix") and ids[-1] == tok.token_id("fim_suffix")
    assert tok.decode(ids[1:-1]) == "def add(a, b):"


def test_fim_on_a_tokenizer_without_fim_tokens_is_a_clear_error(tmp_path):
    tok = train_bpe_tokenizer([SAMPLE_CODE], 512)
    data = json.loads(tok.to_str())
    # Rename the FIM pieces, as in base Gemma where ids 67-70 are <unused60..63>.
    for added in data["added_tokens"]:
        if added["content"].startswith("<|fim") or added["content"] == "<|file_separator|>":
            old = added["content"]
            added["content"] = f"<unused{added['id'] - 7}>"
            data["model"]["vocab"][added["content"]] = data["model"]["vocab"].pop(old)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    plain = Tokenizer.load(tmp_path)
    assert not plain.has_fim
    with pytest.raises(TokenizerError, match="no fill-in-the-middle tokens"):
        plain.require_fim()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or tokenizer.model"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        Tokenizer.load(tmp_path)


def test_saved_files_round_trip(small_tokenizer_dir, tmp_path):
    tok = Tokenizer.load(small_tokenizer_dir)
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.encode(SAMPLE_CODE) == tok.encode(SAMPLE_CODE)


@pytest.mark.parametrize("backend", ["json", "sentencepiece"])
def test_parse_special_false_keeps_special_texts_as_characters(small_tokenizer_dir, tmp_path, backend):
    """Client text and file contents that spell a special token must not become control tokens."""
    if backend == "json":
        tok = Tokenizer.load(small_tokenizer_dir)
    else:
        tok = _sentencepiece_tokenizer(tmp_path)
    text = "s = '<|fim_prefix|>' + '<eos>'"
    control = {tok.token_id("fim_prefix"), tok.eos_id}
    assert control & set(tok.encode(text))  # by default they are control tokens
    plain = tok.encode(text, parse_special=False)
    assert not control & set(plain)
    assert tok.decode(plain) == text
    assert tok.encode_batch([text], add_bos=True, parse_special=False) == [[tok.bos_id, *plain]]


def test_piece_bytes_are_the_bytes_a_token_stands_for(small_tokenizer_dir):
    tok = Tokenizer.load(small_tokenizer_dir)
    ids = tok.encode(" def\tä", add_bos=False)
    assert b"".join(tok.piece_bytes(i) for i in ids) == " def\tä".encode()  # byte-fallback pieces included
    byte_token = tok.encode("\x07")[0]  # a control byte: only a byte-fallback token spells it
    assert tok.id_to_piece(byte_token) == "<0x07>" and tok.piece_bytes(byte_token) == b"\x07"
    assert tok.piece_bytes(10**9) is None
