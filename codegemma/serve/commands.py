"""`codegemma serve`: an HTTP server that IDE completion clients already speak
(OpenAI /v1, Ollama /api, llama.cpp /infill and /completion)."""

from __future__ import annotations

from codegemma.fim.format import MODES
from codegemma.infer.modes import DECODE_MODES

import logging
import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model over HTTP (OpenAI, Ollama and llama.cpp APIs) for IDE completion",
        description="Serve a model to editors: Continue, llama.vscode, llama.vim, any OpenAI client. "
                    "See docs/serving.md.")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="model directory (Hugging Face format, or one made by `codegemma init`), or nano "
                        "(default): codegemma-nano, the small model built into the package")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 only with --api-key)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health "
                        "(default: $CODEGEMMA_API_KEY, else no key)")
    p.add_argument("--max-slots", type=int, default=4, help="requests decoded at once (KV-cache slots)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests allowed to wait for a slot; beyond that the server answers 429")
    p.add_argument("--max-seq-len", type=int, default=None,
                   help="context length (default: the model's, at most 8192)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: the checkpoint's on GPU)")
    p.add_argument("--model-name", default=None,
                   help="name reported by /v1/models and /api/tags (default: the directory name)")
    p.add_argument("--fim-mode", default="psm", choices=MODES,
                   help="order of infill prompts: psm (default, CodeGemma's) or spm (suffix first; "
                        "codegemma-nano scores better with it)")
    p.add_argument("--decode", choices=DECODE_MODES, default=None,
                   help="decode step (default: compile on GPU, i.e. torch.compile + CUDA graphs, compiled "
                        "at start-up; eager on CPU); graphs starts faster")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from codegemma.cli import UserError
    from codegemma.models import resolve_model

    api_key = args.api_key or os.environ.get("CODEGEMMA_API_KEY") or None

    model = resolve_model(args.model)
    if not os.path.isdir(model):
        raise FileNotFoundError(f"{args.model}: model directory not found; pass --model DIR with config.json, "
                                "weights and tokenizer.json (e.g. one made by `codegemma init`)")
    if args.max_slots < 1 or args.max_queue < 0:
        raise UserError("--max-slots must be >= 1 and --max-queue >= 0")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port (1..65535)")
    _check_port_free(args.host, args.port)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from codegemma.serve.app import load_backend, run_server

    backend = load_backend(model, device=args.device, dtype=args.dtype, max_slots=args.max_slots,
                           max_queue=args.max_queue, max_seq_len=args.max_seq_len, model_name=args.model_name,
                           fim_mode=args.fim_mode, decode=args.decode)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logging.getLogger("codegemma.serve").warning(
            "binding to %s without --api-key: anyone who can reach this port can use the model", args.host)
    run_server(backend, args.host, args.port, api_key, log_level=args.log_level)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Fail before loading the model if the address cannot be bound (one clear line, not a traceback)."""
    import socket

    from codegemma.cli import UserError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port "
                            "or stop the process that uses it") from None
