"""Subcommands of the data area: `data prepare|stats|inspect` and `tokenizer train`.

  codegemma data prepare --input repos/ --out data/ --tokenizer tok/ --workers 2
  codegemma data prepare --out data/ --tokenizer tok/ --executor ray --ray-address auto
  codegemma data prepare --input repos/ --out data/ --tokenizer tok/ --fim-passes 4
  codegemma data stats data/            (prints counts, writes data/stats.png)
  codegemma data inspect data/ --n 3
  codegemma tokenizer train --input repos/ --vocab-size 32000 --out tok/
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="prepare training data from repositories (prepare, stats, inspect)")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("prepare", help="repositories -> filtered, deduplicated, FIM'd, tokenised shards",
                       description="Read repositories (a directory of repositories, a JSON-lines file of "
                                   '{"repo","path","content"}, or by default this Python\'s stdlib and '
                                   "site-packages), filter, decontaminate, redact PII, deduplicate, pack files "
                                   "by dependency order, make FIM examples, tokenise and write shards. "
                                   "Rerunning a killed run resumes it.")
    p.add_argument("--input", default=None, metavar="PATH",
                   help="directory of repositories or .jsonl(.gz) file (default: stdlib + site-packages)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (shards + manifest.json)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory or tokenizer.json with FIM tokens")
    p.add_argument("--seq-len", type=int, default=8192, help="tokens per sequence (default 8192)")
    p.add_argument("--fim-rate", type=float, default=0.9, help="share of files made FIM examples (default 0.9)")
    p.add_argument("--spm-rate", type=float, default=0.5, help="share of FIM examples in SPM order (default 0.5)")
    p.add_argument("--fim-statement-rate", type=float, default=0.3,
                   help="share of FIM middles that are whole lines of whole statements (default 0.3)")
    p.add_argument("--fim-path-rate", type=float, default=1.0,
                   help="share of FIM examples that keep their path line (default 1.0: all)")
    p.add_argument("--fim-passes", type=int, default=1, metavar="N",
                   help="renderings of the train split, each with fresh FIM decisions and repository order, "
                        "so a model trained for several epochs sees each file split differently "
                        "(default 1; validation always has one)")
    p.add_argument("--seed", type=int, default=0, help="seed for FIM decisions and repository order (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.01,
                   help="share of repositories held out for validation (default 0.01, at least one)")
    p.add_argument("--val-repos", default=None, metavar="NAMES",
                   type=lambda text: tuple(sorted({t.strip() for t in text.split(",") if t.strip()})),
                   help="comma list of repositories to hold out for validation (default: the --val-fraction hash rule)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes / Ray CPUs (default 1)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="local processes or Ray")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (e.g. auto); default: start a local Ray")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="benchmark data for decontamination (default $CODEGEMMA_DATA_DIR, else the cache "
                   "~/.cache/codegemma/benchmarks: the folders `codegemma eval` reads)")
    p.add_argument("--no-decontaminate", action="store_true", help="skip benchmark decontamination")
    p.add_argument("--limit-mb", type=float, default=None, help="read at most this many MB of source (first repositories by name)")
    p.add_argument("--sequences-per-shard", type=int, default=1024, help="sequences per shard file (default 1024)")
    p.add_argument("--task-mb", type=float, default=4.0,
                   help="source MB per parallel task (default 4; smaller = finer progress and resume)")
    p.add_argument("--keep-work", action="store_true",
                   help="keep OUT/.work (intermediate files) after success; default: delete it")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that holds something else: a data set of other settings there is "
                        "replaced, other files are left alone (default: refuse)")
    p.set_defaults(func=_run_prepare)

    s = sub.add_parser("stats", help="counts, drop reasons, tokens, and a PNG plot of a prepared data set")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--plot", default=None, metavar="PNG", help="where to write the plot (default DIR/stats.png)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=_run_stats)

    i = sub.add_parser("inspect", help="decode sequences with special tokens visible")
    i.add_argument("dir", metavar="DIR")
    i.add_argument("--n", type=int, default=3, help="sequences to show (default 3)")
    i.add_argument("--split", choices=("train", "val"), default="train", help="which split to show")
    i.add_argument("--tokenizer", default=None, metavar="DIR", help="default: DIR/tokenizer (copied by prepare)")
    i.set_defaults(func=_run_inspect)

    tok = subparsers.add_parser("tokenizer", help="train a tokenizer (tokenizer train)")
    tsub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    tsub.required = True
    t = tsub.add_parser("train", help="train a byte-fallback BPE tokenizer with Gemma's special tokens",
                        description="Train on the same corpus readers as `data prepare` (decoded, quality-filtered, "
                                    "PII-redacted files). The directory loads with codegemma and transformers.")
    t.add_argument("--input", default=None, metavar="PATH", help="as for data prepare (default: stdlib + site-packages)")
    t.add_argument("--vocab-size", type=int, required=True, help="vocabulary size (>= 367)")
    t.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (tokenizer.json and its configs)")
    t.add_argument("--limit-mb", type=float, default=100.0, help="train on at most this many MB (default 100)")
    t.set_defaults(func=_run_tokenizer_train)


def _warn_without_tree_sitter() -> None:
    """FIM falls back to character-level splits per file when tree-sitter cannot parse it; when it
    cannot even load (a broken install), every split would be random and no import would be found:
    say so before hours of work."""
    from codegemma.repo.languages import ParserCache

    cache = ParserCache()
    if cache.get("python") is None:
        print(f"codegemma data prepare: warning: tree-sitter is unavailable ({cache.errors.get('python')}); "
              "FIM will split at random characters instead of syntax nodes, and no imports will be found "
              "(files are packed alphabetically). Install tree-sitter and "
              "tree-sitter-language-pack<1 to fix it.", file=sys.stderr)


def _run_prepare(args: argparse.Namespace) -> int:
    from .executors import ExecutorConfig
    from .prepare import PrepareConfig, prepare

    cfg = PrepareConfig(out=args.out, tokenizer=args.tokenizer, input=args.input, seq_len=args.seq_len,
                        fim_rate=args.fim_rate, spm_rate=args.spm_rate,
                        statement_rate=args.fim_statement_rate, path_rate=args.fim_path_rate, fim_passes=args.fim_passes, seed=args.seed,
                        val_fraction=args.val_fraction, val_repos=args.val_repos, data_dir=args.data_dir,
                        decontaminate=not args.no_decontaminate, limit_mb=args.limit_mb,
                        sequences_per_shard=args.sequences_per_shard, task_mb=args.task_mb,
                        keep_work=args.keep_work, overwrite=args.overwrite)
    cfg.validate()     # before the tree-sitter check: a bad option is reported first
    _warn_without_tree_sitter()

    def notify(message: str) -> None:
        print(f"codegemma data prepare: {message}", file=sys.stderr)

    try:
        manifest = prepare(cfg, ExecutorConfig(args.executor, args.workers, args.ray_address), notify)
    except KeyboardInterrupt:
        notify(f"interrupted; the finished work is kept in {args.out}/.work: run the same command to resume")
        return 130
    tr, va = manifest["splits"]["train"], manifest["splits"]["val"]
    passes = f" x {tr['fim_passes']} FIM passes" if tr.get("fim_passes", 1) > 1 else ""
    print(f"{args.out}: train {tr['num_sequences']} sequences ({tr['num_tokens']} tokens, "
          f"{tr['num_repositories']} repositories{passes}), val {va['num_sequences']} sequences "
          f"({va['num_tokens']} tokens, {va['num_repositories']} repositories) of {manifest['seq_len']} tokens")
    dropped = manifest.get("dropped", {})
    if dropped:
        print("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
    return 0


def _run_stats(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import plot, summarize

    summary = summarize(args.dir)
    png = plot(args.dir, args.plot or Path(args.dir) / "stats.png")
    if args.json:
        print(json.dumps({**summary, "plot": str(png)}, indent=2))
        return 0
    print(f"sequence length {summary['seq_len']}")
    for split, info in summary["splits"].items():
        repeated = f" (+{info['num_repeated_tokens']} repeated)" if info.get("num_repeated_tokens") else ""
        passes = info.get("fim_passes", 1)
        print(f"{split:5s}: {info['num_sequences']} sequences, {info['num_tokens']} tokens{repeated}, "
              f"{info['num_documents']} documents, {info['num_repositories']} repositories, "
              f"{passes} FIM pass{'es' if passes != 1 else ''}")
    for title in ("counts", "dropped", "changed", "contaminated_by"):
        if summary.get(title):
            print(f"{title}:")
            for k, v in sorted(summary[title].items()):
                print(f"  {k:40s} {v}")
    if summary.get("fim_passes", 1) > 1:
        print(f"counts of FIM decisions (fim_*, plain_files, chunks_packed) and tokens cover every pass: "
              f"{summary['fim_passes']} renderings of each train file, 1 of each val file; "
              f"counts of files (files_packed, file_pieces, ...) count each file once")
    if "fim_rate" in summary:
        print(f"FIM rate {summary['fim_rate']:.3f}, SPM share of FIM {summary['spm_share_of_fim']:.3f}")
    print(f"plot: {png}")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import inspect

    tok = args.tokenizer or str(Path(args.dir) / "tokenizer")
    print(inspect(args.dir, n=args.n, split=args.split, tokenizer_dir=tok))
    return 0


def _run_tokenizer_train(args: argparse.Namespace) -> int:
    from .corpus import corpus_texts

    from codegemma.atomic import check_output_dir
    from codegemma.tokenizer import Tokenizer, save_tokenizer_files, train_bpe_tokenizer

    check_output_dir(args.out, force=True, option="--out")  # a file there: said before training, not after
    texts = corpus_texts(args.input, limit_mb=args.limit_mb)
    if not texts:
        raise ValueError(f"--input {args.input or '(default corpus)'}: no usable source files to train on")
    tok = train_bpe_tokenizer(texts, args.vocab_size)
    save_tokenizer_files(tok, args.out)
    loaded = Tokenizer.load(args.out)
    print(f"{args.out}: vocabulary {loaded.vocab_size}, trained on {len(texts)} files "
          f"({sum(map(len, texts)) / 1e6:.1f} M characters)")
    return 0
