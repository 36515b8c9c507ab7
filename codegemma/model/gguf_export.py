"""Export a model directory to GGUF (llama.cpp, Ollama) plus an Ollama Modelfile.

Follows llama.cpp's GemmaModel converter (gemma-architecture.md §4): arch "gemma", norms stored as
(1 + w) in f32, no output.weight (the graph reuses token_embd), a SentencePiece-style ("llama")
vocabulary, and the FIM / end-of-turn ids written explicitly (llama.cpp does not auto-detect
`<|file_separator|>`).

Tokenizers: a `tokenizer.model` (SentencePiece, as in Google's releases) is copied piece by piece.
A `tokenizer.json` is accepted when it is the SentencePiece-shaped byte-fallback BPE that
`codegemma tokenizer train` / `init` make (spaces as "▁", `<0xXX>` byte pieces, no byte-level
pre-tokenizer): its pieces get score -id, so llama.cpp's SPM merge order follows the BPE merge
order. Other tokenizers (GPT-2 byte-level BPE, WordPiece, ...) are refused with a clear message.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from codegemma.model.checkpoint import CheckpointError, load_config, load_model
from codegemma.tokenizer.special import SPECIAL_TOKENS

# HF (ours, without `model.`) -> GGUF tensor names; {i} is the layer.
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",  # Gemma 1: the pre-MLP norm
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}

def gguf_tensor_name(name: str) -> str:
    if name == "embed_tokens.weight":
        return "token_embd.weight"
    if name == "norm.weight":
        return "output_norm.weight"
    _, i, rest = name.split(".", 2)  # layers.{i}.rest
    return f"blk.{i}.{_LAYER_NAMES[rest]}"


def read_vocab(model_dir: Path) -> tuple[list[str], list[float], list[int]]:
    """(pieces, scores, gguf token types) for a SentencePiece-style vocabulary, in id order."""
    import gguf

    sp_path, json_path = model_dir / "tokenizer.model", model_dir / "tokenizer.json"
    control = {t.text for t in SPECIAL_TOKENS.values()}
    if sp_path.is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(sp_path))
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        scores = [sp.get_score(i) for i in range(sp.get_piece_size())]
        types = []
        for i in range(sp.get_piece_size()):
            if sp.is_unknown(i):
                types.append(gguf.TokenType.UNKNOWN)
            elif sp.is_control(i):
                types.append(gguf.TokenType.CONTROL)
            elif sp.is_byte(i):
                types.append(gguf.TokenType.BYTE)
            elif sp.is_unused(i):
                types.append(gguf.TokenType.UNUSED)
            elif pieces[i] in control:  # user-defined in CodeGemma's model; control for llama.cpp
                types.append(gguf.TokenType.CONTROL)
            else:
                types.append(gguf.TokenType.NORMAL)
        return pieces, scores, [int(t) for t in types]
    if not json_path.is_file():
        raise CheckpointError(f"{model_dir}: no tokenizer.model or tokenizer.json to export")
    tj = json.loads(json_path.read_text())
    model = tj.get("model") or {}
    why = _why_not_spm_shaped(tj)
    if why:
        raise CheckpointError(f"{json_path}: cannot be expressed as a GGUF 'llama' (SentencePiece) vocabulary: "
                              f"{why}; export a model with a tokenizer.model, or one made by codegemma")
    vocab: dict[str, int] = dict(model["vocab"])
    for added in tj.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    n = max(vocab.values()) + 1
    pieces = [""] * n
    for piece, i in vocab.items():
        pieces[i] = piece
    if "" in pieces:
        raise CheckpointError(f"{json_path}: token ids are not contiguous (id {pieces.index('')} has no piece)")
    special = {a["content"] for a in tj.get("added_tokens", []) if a.get("special")}
    scores, types = [], []
    for i, piece in enumerate(pieces):
        if piece == "<unk>":
            types.append(gguf.TokenType.UNKNOWN)
        elif piece in control or piece in special:
            types.append(gguf.TokenType.CONTROL)
        elif piece.startswith("<0x") and len(piece) == 6 and piece.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
        scores.append(0.0 if types[-1] != gguf.TokenType.NORMAL else -float(i))
    return pieces, scores, [int(t) for t in types]


def _why_not_spm_shaped(tj: dict) -> str | None:
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        return f"model type {model.get('type')!r} (only BPE maps onto SentencePiece)"
    if not model.get("byte_fallback"):
        return "BPE without byte_fallback (a GPT-2 style byte-level vocabulary)"
    text = json.dumps([tj.get("pre_tokenizer"), tj.get("normalizer"), tj.get("decoder")], ensure_ascii=False)
    if "ByteLevel" in text:
        return "it uses a ByteLevel pre-tokenizer (GPT-2 style, no '▁' pieces)"
    if "▁" not in text:
        return "spaces are not written as '▁'"
    return None


def export_gguf(model_dir: str | os.PathLike, out_path: str | os.PathLike, dtype: str = "f16",
                allow_pickle: bool = False, chat: bool = False, fim_mode: str = "psm") -> tuple[Path, Path]:
    """Write OUT.gguf and a Modelfile next to it; returns both paths. Written atomically."""
    try:
        import gguf
    except ImportError:
        raise CheckpointError("GGUF export needs the gguf package: pip install gguf") from None
    import numpy as np
    import torch

    model_dir, out = Path(model_dir), Path(out_path)
    qtypes = {"f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
              "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
              "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16)}
    if dtype not in qtypes:
        raise CheckpointError(f"unknown GGUF dtype {dtype!r}; choose f32, f16 or bf16")
    qtype, ftype = qtypes[dtype]
    load_config(model_dir)  # a missing directory or foreign config.json is reported first
    pieces, scores, types = read_vocab(model_dir)  # fail on the tokenizer before loading weights
    # A 16-bit checkpoint exported to 16 bits needs no fp32 copy of the weights in memory.
    stored = _stored_dtype(model_dir)
    load_dtype = "float32" if dtype == "f32" or stored not in ("bfloat16", "float16") else stored
    model, config = load_model(model_dir, device="cpu", dtype=load_dtype, allow_pickle=allow_pickle)
    if len(pieces) > config.vocab_size:
        raise CheckpointError(f"{model_dir}: tokenizer has {len(pieces)} pieces but the model only "
                              f"{config.vocab_size} embedding rows")
    pieces += [f"<pad{i}>" for i in range(config.vocab_size - len(pieces))]
    scores += [0.0] * (config.vocab_size - len(scores))
    types += [int(gguf.TokenType.UNUSED)] * (config.vocab_size - len(types))

    def type_of(name: str) -> gguf.GGMLQuantizationType:
        return gguf.GGMLQuantizationType.F32 if name.endswith("norm.weight") else qtype  # norms stay f32

    def as_array(name: str, t: torch.Tensor) -> np.ndarray:
        t = t.detach().float()
        if name.endswith("norm.weight"):
            return (t + 1.0).numpy()  # GGUF stores the (1 + w) scale, computed in fp32
        if qtype == gguf.GGMLQuantizationType.F32:
            return t.numpy()
        if qtype == gguf.GGMLQuantizationType.F16:
            return t.half().numpy()
        return gguf.quants.quantize(t.numpy(), qtype)  # bf16 as raw bytes

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, "gemma")
        writer.add_name(model_dir.resolve().name)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        if config.rope_theta != 10000.0:  # llama.cpp's default; the official converter omits it
            writer.add_rope_freq_base(config.rope_theta)
        writer.add_file_type(ftype)
        _add_tokenizer(writer, model_dir, pieces, scores, types, config)

        state = model.state_dict()
        for name, t in state.items():  # tensor infos first: the header lists every tensor
            q = type_of(name)
            nbytes = t.numel() * (4 if q == gguf.GGMLQuantizationType.F32 else 2)
            # PyTorch shape order; the writer reverses it into ggml's fastest-first order.
            writer.add_tensor_info(gguf_tensor_name(name), list(t.shape), np.float32, nbytes, raw_dtype=q)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, t in state.items():  # converted and written one tensor at a time
            writer.write_tensor_data(as_array(name, t))
        writer.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    modelfile = write_modelfile(out, chat=chat, mode=fim_mode)
    return out, modelfile


def _stored_dtype(model_dir: Path) -> str:
    cfg = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    return str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")


def _add_tokenizer(writer, model_dir: Path, pieces, scores, types, config) -> None:
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_unk_token_id(pieces.index("<unk>") if "<unk>" in pieces else 3)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    ids = {p: i for i, p in enumerate(pieces)}
    fim = {"FIM_PRE_ID": "fim_prefix", "FIM_SUF_ID": "fim_suffix", "FIM_MID_ID": "fim_middle",
           "FIM_SEP_ID": "file_separator", "EOT_ID": "end_of_turn"}
    import gguf

    for key, name in fim.items():
        text = SPECIAL_TOKENS[name].text
        if text in ids:  # set explicitly: llama.cpp's text auto-detection misses <|file_separator|>
            writer.add_uint32(getattr(gguf.Keys.Tokenizer, key), ids[text])
    tok_cfg = model_dir / "tokenizer_config.json"
    if tok_cfg.is_file():
        template = json.loads(tok_cfg.read_text()).get("chat_template")
        if isinstance(template, str):
            writer.add_chat_template(template)


def write_modelfile(gguf_path: Path, chat: bool = False, mode: str = "psm") -> Path:
    """An Ollama Modelfile next to the GGUF: the FIM template of `mode` (codegemma.fim.templates),
    the CodeGemma stop texts."""
    from codegemma.atomic import atomic_write_text
    from codegemma.fim.templates import modelfile

    path = gguf_path.with_name("Modelfile")
    atomic_write_text(path, modelfile(f"./{gguf_path.name}", mode, chat))
    return path
