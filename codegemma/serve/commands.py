"""`codegemma serve`: an HTTP server that IDE completion clients already speak
(OpenAI /v1, Ollama /api, llama.cpp /infill and /completion)."""

from __future__ import annotations

import logging
import os

from codegemma.fim.format import MODES
from codegemma.infer.modes import DECODE_MODES
from codegemma.model.commands import add_allow_nonfinite
from codegemma.serve.limits import UINT32_MAX, ClientLimits


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model over HTTP (OpenAI, Ollama and llama.cpp APIs) for IDE completion",
        description="Serve a model to editors: Continue, llama.vscode, llama.vim, any OpenAI client. "
                    "See docs/serving.md.")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="model directory (Hugging Face format, or one made by `codegemma init`), or nano "
                        "(default): codegemma-nano, the small model built into the package")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind, or a comma list of them (e.g. 127.0.0.1,::1 for both loopbacks; "
                        "default 127.0.0.1: this machine only); any other address, e.g. 0.0.0.0, needs "
                        "--api-key (or --unsafe-no-api-key)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (or 'X-Api-Key: KEY') on every route but "
                        "/health and the playground page "
                        "(default: $CODEGEMMA_API_KEY, else no key)")
    p.add_argument("--cors-origins", default="*", metavar="ORIGINS",
                   help="origins whose pages may call the server from a browser: * (default, as llama.cpp), "
                        "none, or a comma list of origins; 'localhost' stands for any local origin")
    p.add_argument("--n-predict", type=int, default=-1, metavar="N",
                   help="tokens to generate for a request that sets no limit (default -1: as many as the "
                        "context leaves; llama-server's --n-predict)")
    p.add_argument("--temp", type=float, default=None, metavar="T",
                   help="temperature of llama.cpp-route requests that set none (default 0.8, llama.cpp's)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of llama.cpp-route requests that set none (default: random, as llama-server's)")
    p.add_argument("--no-slots", dest="slots", action="store_false",
                   help="disable GET /slots (per-slot state, as llama.cpp's --no-slots)")
    p.add_argument("--batch-size", "-b", type=int, default=None, metavar="N",
                   help="longest prompt chunk computed in one pass (llama-server's --batch-size; default 4096); "
                        "return_progress reports after each")
    p.add_argument("--no-ui", "--no-webui", dest="ui", action="store_false",
                   help="do not serve the playground page at GET / (404, as llama-server's --no-ui)")
    p.add_argument("--unsafe-no-api-key", action="store_true",
                   help="serve a non-loopback --host without a key: anyone who reaches the port can use the "
                        "model (only on a trusted network, or inside a container published to loopback)")
    p.add_argument("--max-slots", type=int, default=4, help="requests decoded at once (KV-cache slots)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests allowed to wait for a slot; beyond that the server answers 429")
    p.add_argument("--max-seq-len", type=int, default=None,
                   help="context length (default: the model's, at most 8192)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: the checkpoint's on GPU)")
    from codegemma.commands import add_quantize_args

    add_quantize_args(p)
    p.add_argument("--model-name", "--alias", "-a", default=None, metavar="NAME[,NAME...]",
                   help="name reported by /v1/models and /api/tags (default: the directory name); several, "
                        "comma-separated, are llama-server's aliases: the id is the first in alphabetical order")
    p.add_argument("--tags", default=None, metavar="TAG[,TAG...]",
                   help="informational tags listed by /v1/models (llama-server's --tags)")
    p.add_argument("--fim-mode", default="psm", choices=MODES,
                   help="order of infill prompts: psm (default, CodeGemma's) or spm (suffix first; "
                        "codegemma-nano scores better with it)")
    p.add_argument("--decode", choices=DECODE_MODES, default=None,
                   help="decode step (default: compile on GPU, i.e. torch.compile + CUDA graphs, compiled "
                        "at start-up; eager on CPU); graphs starts faster")
    p.add_argument("--max-body-mb", type=float, default=ClientLimits.max_body_bytes / 2**20, metavar="MB",
                   help="largest request body, in MiB (default %(default)g); larger ones get 413 as soon as "
                        "the limit is passed")
    p.add_argument("--max-connections", type=int, default=ClientLimits.max_connections,
                   help="connections open at once (default %(default)s, lowered to fit the open-file limit); "
                        "over it, the oldest idle connection is closed")
    p.add_argument("--max-connections-per-client", type=int, default=ClientLimits.max_per_client,
                   metavar="N", help="connections open at once per remote address (default %(default)s; 0: "
                                     "no cap); loopback clients are not capped")
    p.add_argument("--client-timeout", type=float, default=ClientLimits.client_timeout_s, metavar="S",
                   help="seconds a client gets to send a request's headers, and its body (plus a second per "
                        "64 KiB), and the longest it may leave its response unread (default %(default)g)")
    p.add_argument("--speculate", type=int, default=15, metavar="N",
                   help="draft tokens verified per pass (drafts from the slot's previous completion and the "
                        "prompt; greedy and sampled requests alike, output distribution unchanged); 0 = off "
                        "(default 15)")
    p.add_argument("--cache-reuse", type=int, default=0, metavar="N",
                   help="reuse cached runs of at least N tokens that moved (an editor dropped a context chunk), "
                        "re-rotating their keys, as llama.cpp's --cache-reuse; approximate past layer 0 "
                        "(docs/inference.md); 0 = off (default)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="server log verbosity")
    add_allow_nonfinite(p)
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from codegemma.cli import UserError
    from codegemma.device import resolve_device
    from codegemma.model.checkpoint import load_config
    from codegemma.models import resolve_model
    from codegemma.serve.connections import is_loopback

    api_key = args.api_key or os.environ.get("CODEGEMMA_API_KEY") or None

    model = resolve_model(args.model)
    load_config(model)  # a folder that is not a model fails here, before the port and the weights
    if args.temp is not None and not 0 <= args.temp < float("inf"):
        raise UserError(f"--temp {args.temp} must be a number >= 0")
    if args.seed is not None and not -1 <= args.seed <= UINT32_MAX:
        raise UserError(f"--seed {args.seed} must be -1 (random) or 0..{UINT32_MAX}, as llama.cpp's")
    resolve_device(args.device)  # a device this machine lacks: one line before the port is checked
    if args.max_slots < 1 or args.max_queue < 0:
        raise UserError("--max-slots must be >= 1 and --max-queue >= 0")
    if not (args.max_body_mb > 0 and args.client_timeout > 0) or args.max_connections < 1 \
            or args.max_connections_per_client < 0:
        raise UserError("--max-body-mb and --client-timeout must be > 0, --max-connections >= 1 and "
                        "--max-connections-per-client >= 0")
    limits = ClientLimits(max_body_bytes=int(args.max_body_mb * 2**20), client_timeout_s=args.client_timeout,
                          max_connections=args.max_connections, max_per_client=args.max_connections_per_client)
    if args.speculate < 0 or args.cache_reuse < 0:
        raise UserError("--speculate and --cache-reuse take N >= 0 (0 = off)")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be >= 1")
    aliases, tags = _names(args.model_name, "--model-name (--alias)"), _names(args.tags, "--tags")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port (1..65535)")
    hosts = list(dict.fromkeys(h.strip().strip("[]") for h in args.host.split(",") if h.strip()))
    if not hosts:
        raise UserError("--host needs an address (e.g. 127.0.0.1, or 127.0.0.1,::1)")
    exposed = [h for h in hosts if not is_loopback(h)]
    if not api_key and exposed and not args.unsafe_no_api_key:
        # On a shared machine or network an open port is everyone's model and compute.
        raise UserError(f"--host {exposed[0]} is reachable from other machines; give --api-key KEY (or set "
                        "CODEGEMMA_API_KEY), or pass --unsafe-no-api-key on a trusted network")
    # bound now (listening once the model is loaded): a busy address fails before the weights load,
    # and nothing can take the port meanwhile
    sockets = _bind(hosts, args.port)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from codegemma.serve.app import load_backend, run_server

    backend = load_backend(model, device=args.device, dtype=args.dtype, max_slots=args.max_slots,
                           max_queue=args.max_queue, max_seq_len=args.max_seq_len,
                           aliases=aliases, tags=tags,
                           fim_mode=args.fim_mode, decode=args.decode, speculate=args.speculate,
                           cache_reuse=args.cache_reuse, allow_nonfinite=args.allow_nonfinite,
                           n_predict=args.n_predict, temperature=args.temp, seed=args.seed,
                           quantize=args.quantize, group_size=args.group_size,
                           **({"prefill_chunk": args.batch_size} if args.batch_size else {}))
    if not api_key and exposed:
        logging.getLogger("codegemma.serve").warning(
            "binding to %s without an API key (--unsafe-no-api-key): anyone who can reach this port can use "
            "the model", ", ".join(exposed))
    run_server(backend, sockets, api_key, log_level=args.log_level, cors_origins=args.cors_origins,
               slots=args.slots, ui=args.ui, limits=limits)
    return 0


def _names(value: str | None, flag: str) -> list[str]:
    """A comma list as names (llama-server's --alias and --tags); none for None."""
    from codegemma.cli import UserError

    if value is None:
        return []
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not names:
        raise UserError(f"{flag} needs at least one name")
    return names


def _bind(hosts: list[str], port: int) -> list:
    """A bound socket per address (one clear line, not a traceback, if one cannot be bound; none
    is left open then). IPv6 sockets are IPv6 only, so `0.0.0.0,::` binds both families; names
    that resolve to one address (localhost,127.0.0.1) are bound once; a wildcard with another
    address of its family would fail when listening, so it is refused here."""
    import socket

    from codegemma.cli import UserError

    bound: dict[tuple, tuple[str, socket.socket]] = {}

    def fail(message: str):
        for _, b in bound.values():
            b.close()
        raise UserError(message)

    for host in hosts:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        shown = f"[{host}]" if ":" in host else host
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if s.family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
        except OSError as exc:
            s.close()
            fail(f"cannot listen on {shown}:{port} ({exc.strerror}); pick another --port or --host, or stop "
                 "the process that uses it")
        address = (s.family, s.getsockname()[0])
        if address in bound:  # another name of an address already bound
            s.close()
            continue
        bound[address] = (host, s)
    for (family, ip), (host, _) in bound.items():
        others = [h for (f, i), (h, _) in bound.items() if f == family and i != ip]
        if ip in ("0.0.0.0", "::") and others:
            fail(f"--host {host} already listens on every address of its family, {others[0]} included; "
                 "list one or the other")
    return [s for _, s in bound.values()]
