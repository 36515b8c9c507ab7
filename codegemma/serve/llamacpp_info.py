"""llama.cpp's server routes around generation: POST /tokenize and /detokenize (editors budget their
context with them), POST /apply-template and /chat/completions/input_tokens (what a conversation
becomes), GET /props (default_generation_settings.n_ctx is what clients read), GET /slots.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from codegemma import __version__
from codegemma.serve.backend import Backend
from codegemma.serve.errors import APIError
from codegemma.serve.limits import check_tokenize_chars
from codegemma.serve.llamacpp_api import DEFAULT_SAMPLERS, LlamaParams
from codegemma.serve.openai_api import OpenAIChatMessage, chat_messages
from codegemma.serve.protocol import route

MAX_DETOKENIZE = 1 << 20  # ids in one /detokenize request


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TokenizeRequest(_Strict):
    content: str | list[int | str]
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(_Strict):
    tokens: list[int] = Field(default_factory=list, max_length=MAX_DETOKENIZE)


class ApplyTemplateRequest(_Strict):
    messages: list[OpenAIChatMessage] = Field(min_length=1)


def build_router(backend: Backend, slots: bool = True) -> APIRouter:
    router = APIRouter()
    tok = backend.tokenizer

    def tokenize(req: TokenizeRequest) -> dict:
        parts = [req.content] if isinstance(req.content, str) else req.content
        ids = [tok.bos_id] if req.add_special else []
        for p in parts:
            ids.extend([p] if isinstance(p, int) else tok.encode(p, parse_special=req.parse_special))
        if not req.with_pieces:
            return {"tokens": ids}
        out = []
        for i in ids:
            raw = tok.id_to_piece(i) or ""
            if len(raw) == 6 and raw.startswith("<0x") and raw.endswith(">"):
                piece: str | list[int] = [int(raw[3:5], 16)]  # not UTF-8 on its own: its byte, as llama.cpp
            else:
                piece = raw.replace("\u2581", " ")
            out.append({"id": i, "piece": piece})
        return {"tokens": out}

    @route(router, "POST", ["/tokenize"], TokenizeRequest)
    async def tokenize_route(request: Request, req: TokenizeRequest):
        bad = [i for i in req.content if isinstance(i, int) and not 0 <= i < tok.vocab_size] \
            if isinstance(req.content, list) else []
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{tok.vocab_size - 1})", "content")
        parts = [req.content] if isinstance(req.content, str) else req.content
        check_tokenize_chars(sum(len(p) for p in parts if isinstance(p, str)))
        return await asyncio.to_thread(tokenize, req)

    @route(router, "POST", ["/detokenize"], DetokenizeRequest)
    async def detokenize(request: Request, req: DetokenizeRequest):
        bad = [i for i in req.tokens if not 0 <= i < tok.vocab_size]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{tok.vocab_size - 1})", "tokens")
        return {"content": await asyncio.to_thread(tok.decode, req.tokens)}

    def conversation(req: ApplyTemplateRequest):
        return backend.chat_prompt(chat_messages(req.messages), max_new_tokens=0)

    @route(router, "POST", ["/apply-template"], ApplyTemplateRequest)
    async def apply_template(request: Request, req: ApplyTemplateRequest):
        prepared = await asyncio.to_thread(conversation, req)
        return {"prompt": tok.decode(prepared.ids)}

    @route(router, "POST", ["/chat/completions/input_tokens", "/v1/chat/completions/input_tokens"],
           ApplyTemplateRequest)
    async def input_tokens(request: Request, req: ApplyTemplateRequest):
        prepared = await asyncio.to_thread(conversation, req)
        return {"input_tokens": len(prepared.ids)}

    def default_settings() -> dict:
        params = LlamaParams().model_dump(exclude={"grammar", "json_schema", "response_format", "model",
                                                   "response_fields", "logit_bias", "id_slot"})
        params["samplers"] = list(DEFAULT_SAMPLERS)
        if backend.default_temperature is not None:
            params["temperature"] = backend.default_temperature
        if backend.default_seed is not None:
            params["seed"] = backend.default_seed
        if backend.n_predict is not None:
            params["n_predict"] = backend.n_predict
        params["max_tokens"] = params["n_predict"]
        return {"id": 0, "id_task": -1, "n_ctx": backend.n_ctx, "speculative": False, "is_processing": False,
                "params": params, "prompt": "",
                "next_token": {"has_next_token": True, "has_new_line": False, "n_remain": -1, "n_decoded": 0}}

    @route(router, "GET", ["/props"])
    async def props(request: Request):
        return {"default_generation_settings": default_settings(),
                "total_slots": int(getattr(backend.engine, "max_slots", 1)),
                # the name, never the directory: clients have no business with server paths
                "model_path": backend.model_name, "model_alias": backend.model_name,
                "chat_template": "gemma", "chat_template_caps": {}, "modalities": {"vision": False, "audio": False},
                "build_info": f"codegemma {__version__}", "is_sleeping": False, "fim_mode": backend.fim_mode}

    @route(router, "GET", ["/slots"])
    async def slot_list(request: Request):
        if not slots:
            raise APIError(501, "this server was started with --no-slots; /slots is disabled")
        info = await asyncio.to_thread(backend.engine.slot_info)
        want_free = request.query_params.get("fail_on_no_slot") in ("1", "true")
        if want_free and all(s["is_processing"] for s in info):
            raise APIError(503, "no slot available")
        return [{"id": s["id"], "id_task": s["id_task"], "n_ctx": s["n_ctx"], "speculative": False,
                 "is_processing": s["is_processing"], "tokens_cached": s["cached_tokens"],
                 "next_token": {"has_next_token": s["is_processing"], "has_new_line": s["has_new_line"],
                                "n_remain": s["n_remain"], "n_decoded": s["n_decoded"]}} for s in info]

    return router
