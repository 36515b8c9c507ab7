"""`codegemma data prepare`: repositories -> filtered, deduplicated, FIM'd, tokenised shards.

Stages (work files under OUT/.work/<fingerprint>/, the fingerprint covers every setting that
changes the output, the tokenizer file and the pipeline's source code):
  1. plan        plan.json: repositories and files, sorted (bounded by --limit-mb)
  2. decontam    decontam.npz: the benchmark n-gram index (built once, loaded by every task)
  3. clean       parallel tasks (tasks.clean_task), each marked done
  4. dedup       dedup.json: global exact + near duplicate decisions (first in (repo, path) order wins)
  5. tokenize    parallel tasks (tasks.tokenize_task), each FIM pass of each task marked done
  6. pack        shards + manifest.json in OUT (the manifest last; its presence = finished)
A killed run, started again with the same arguments, skips every finished stage and task and
ends with byte-identical shards. Nothing in the output depends on --workers or --executor.
What a run may write into, what it keeps after a failure and what it removes: outdir.py.

FIM passes (--fim-passes N): the train split holds N renderings of every repository, pass k with
its own FIM decisions (packing.file_rng) and its own seeded repository order, concatenated pass
after pass; validation holds pass 0 only. Pass 0 is the single-pass output, byte for byte. A
tokenize task arranges each repository once and renders and encodes it once per pass. Each pass
has its own stage directory whose content does not depend on N, so the work directory is keyed
without N: raising N on a kept (or killed) work directory computes only the new passes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from codegemma.atomic import DiskFullError, atomic_dir
from codegemma.eval.datasets import benchmarks_dir
from codegemma.tokenizer.files import locate_tokenizer, tokenizer_files

from .decontam import Decontaminator
from .dedup import find_duplicates
from .document import Stats
from .executors import Executor, ExecutorConfig
from .filters import FilterConfig
from .packing import CHARS_PER_TOKEN, FimConfig, pass_key
from .outdir import (WORK_DIR, claim, discard_data_set, failure_is_final, read_manifest, remove_work,
                     sweep_temporaries)
from .readers import check_input, limit_plan, plan_sources, repo_key
from .shards import FORMAT_NAME, FORMAT_VERSION, MANIFEST, ShardWriter, atomic_write_json, remove_shards
from .tasks import clean_task, done_marker, task_name, tokenize_task, tokens_stage_name

TASK_MAX_REPOS = 256


@dataclass
class PrepareConfig:
    out: str
    tokenizer: str
    input: str | None = None
    seq_len: int = 8192
    fim_rate: float = 0.9
    spm_rate: float = 0.5
    statement_rate: float = 0.3     # FimConfig.statement_rate
    path_rate: float = 1.0          # FimConfig.path_rate
    # renderings of the train split, each with its own FIM decisions (a model trained for many
    # epochs then sees a file with several different splits); validation always has one
    fim_passes: int = 1
    seed: int = 0
    val_fraction: float = 0.01
    # validation repositories by name (overrides val_fraction's hash rule), e.g. to keep a
    # repository that matters most in training, or to compare runs on the same held-out code
    val_repos: tuple[str, ...] | None = None
    data_dir: str | None = None
    decontaminate: bool = True
    limit_mb: float | None = None
    sequences_per_shard: int = 1024
    task_mb: float = 4.0        # source MB per parallel task (scheduling only; one big repo is one task)
    keep_work: bool = False     # keep OUT/.work after success (it holds a cleaned copy of the corpus)
    overwrite: bool = False     # write into a folder that holds something else (outdir.claim)
    filters: FilterConfig = field(default_factory=FilterConfig)

    def validate(self) -> None:
        if self.seq_len < 16:
            raise ValueError(f"--seq-len must be at least 16, got {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        self.fim_config()
        if isinstance(self.fim_passes, bool) or not isinstance(self.fim_passes, int) or self.fim_passes < 1:
            raise ValueError(f"--fim-passes must be a whole number >= 1 (1 = one FIM rendering of each file, "
                             f"the default), got {self.fim_passes!r}")


    def fim_config(self) -> FimConfig:
        """The FIM settings every tokenize task packs with (long files cut to fit a sequence)."""
        return FimConfig(self.fim_rate, self.spm_rate, self.statement_rate, self.path_rate,
                         max_chars=int(self.seq_len * CHARS_PER_TOKEN))


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_version() -> dict:
    """Package version, a hash of the sources that shape the output (data, repo, fim, tokenizer)
    and the versions of the libraries that do."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for sub in ("data", "repo", "fim", "tokenizer"):
        for p in sorted((root / sub).glob("*.py")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"
    # libraries whose version can change the bytes (BPE implementation, FIM grammars, MinHash LSH)
    libs = {d: version(d) for d in ("tokenizers", "tree-sitter", "tree-sitter-language-pack", "datasketch")}
    return {"package": version("codegemma"), "source_sha256": h.hexdigest()[:16], "libraries": libs}


def repo_unit(repo: str) -> float:
    """A repository's position in [0, 1) by hash: the validation split takes the lowest."""
    return int(hashlib.sha256(repo.encode("utf-8", "surrogatepass")).hexdigest()[:16], 16) / 2.0**64


def split_repositories(repos: list[str], val_fraction: float,
                       val_repos: tuple[str, ...] | None = None) -> tuple[list[str], list[str]]:
    """(train, val): val = repositories with repo_unit < val_fraction; with 2+ repositories at least
    one (the lowest unit) is in val and at least one stays in train. `val_repos` names the
    validation repositories instead (each must be among `repos`)."""
    if val_repos is not None:
        missing = sorted(set(val_repos) - set(repos))
        if missing:
            raise ValueError(f"--val-repos: no repository named {', '.join(missing)} in the input (after "
                             f"filtering); names are the repository names of `data stats`, e.g. {sorted(repos)[:3]}")
        if len(set(val_repos)) >= len(repos):
            raise ValueError("--val-repos names every repository: leave at least one for training")
        chosen = set(val_repos)
        return [r for r in repos if r not in chosen], [r for r in repos if r in chosen]
    ranked = sorted(repos, key=lambda r: (repo_unit(r), r))
    val = [r for r in ranked if repo_unit(r) < val_fraction]
    if len(ranked) >= 2:
        if not val:
            val = ranked[:1]
        if len(val) == len(ranked):
            val = val[:-1]
    val_set = set(val)
    return [r for r in repos if r not in val_set], [r for r in repos if r in val_set]


def repository_order(repos: list[str], seed: int, fim_pass: int = 0) -> list[str]:
    """The seeded order in which one FIM pass of a split is packed (pass 0: the single-pass order)."""
    return sorted(repos, key=lambda r: hashlib.sha256(pass_key(seed, fim_pass, r)).hexdigest())


def group_tasks(plan: list[dict], task_mb: float) -> list[list[dict]]:
    """Consecutive repositories (by name) up to `task_mb` MB per task: independent of --workers."""
    limit = task_mb * 1e6
    groups, cur, size = [], [], 0
    for entry in plan:
        b = sum(f[1] for f in entry["files"])
        if cur and (size + b > limit or len(cur) >= TASK_MAX_REPOS):
            groups.append(cur)
            cur, size = [], 0
        cur.append(entry)
        size += b
    if cur:
        groups.append(cur)
    return groups


class Preparation:
    """One `data prepare` run: validates the inputs up front, then runs or resumes the stages."""

    def __init__(self, cfg: PrepareConfig, executor: ExecutorConfig,
                 notify: Callable[[str], None] | None = None):
        cfg.validate()
        from codegemma.tokenizer import Tokenizer

        self.cfg, self.executor = cfg, executor
        self.notify = notify or (lambda message: None)     # what a person running it should know
        self.out = Path(cfg.out)
        check_input(cfg.input)
        self.tok_file = locate_tokenizer(cfg.tokenizer)
        self.tokenizer = Tokenizer.load(self.tok_file)
        self.tokenizer.require_fim()
        self.data_dir = benchmarks_dir(cfg.data_dir) if cfg.decontaminate else None
        if cfg.decontaminate and self.data_dir is None:
            raise FileNotFoundError("no benchmark data for decontamination: set CODEGEMMA_DATA_DIR or pass "
                                    "--data-dir DIR (or --no-decontaminate to skip it)")
        self.version = code_version()
        # task_mb only schedules work: it shapes the work directory, never the output
        settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "tokenizer", "data_dir", "task_mb",
                                                                  "keep_work", "overwrite")}
        settings["input"] = str(Path(cfg.input).resolve()) if cfg.input else None
        self.settings = settings

        def fingerprint(settings: dict) -> str:
            ident = json.dumps({"settings": settings, "tokenizer": _file_sha(self.tok_file),
                                "data_dir": str(self.data_dir), "code": self.version}, sort_keys=True)
            return hashlib.sha256(ident.encode()).hexdigest()[:16]

        # the output's identity covers every setting; the work directory's leaves out fim_passes,
        # whose passes have stage directories of their own (see the module doc)
        self.fingerprint = fingerprint(settings)
        self.work = self.out / WORK_DIR / fingerprint({k: v for k, v in settings.items() if k != "fim_passes"})
        self.timings: dict[str, float] = {}    # seconds per stage of this process (not in the manifest)
        self.resumed = False
        self.packing = False

    def run(self) -> dict:
        if claim(self.out, self.work, self.fingerprint, self.cfg.overwrite) == "done":
            self.notify(f"{self.out} already holds this data set (same inputs and settings): nothing to do")
            return read_manifest(self.out)
        created = not self.out.exists()
        self.resumed = self.work.is_dir()
        try:
            if self.resumed:
                sweep_temporaries(self.out)
            self.work.mkdir(parents=True, exist_ok=True)
            with Executor(self.executor) as ex:
                manifest = self._run_stages(ex)
        except BaseException as exc:
            self._clean_up_after(exc, created)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # also what atomic writes do not see: a directory, or a temporary that got no inode
                raise DiskFullError(exc.filename or self.out) from None
            raise
        if not self.cfg.keep_work:
            remove_work(self.out)
        return manifest

    def _clean_up_after(self, exc: BaseException, created: bool) -> None:
        """Leave resumable state, remove garbage (outdir.py says which is which)."""
        if self.packing:
            discard_data_set(self.out)
        if failure_is_final(exc):
            remove_work(self.out, self.work)
            if created and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()

    def _run_stages(self, ex: Executor) -> dict:
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            self.timings[name] = now - clock
            clock = now

        plan = self._plan()
        groups = group_tasks(plan, self.cfg.task_mb)
        self.task_bytes = [sum(f[1] for e in g for f in e["files"]) for g in groups]
        lap("plan")
        decon = self._decontam_index()
        lap("decontam_index")
        layout = hashlib.sha256(json.dumps([[e["repo"] for e in g] for g in groups]).encode()).hexdigest()[:8]
        self.task_dir = self.work / f"tasks-{layout}"      # markers are per task, so per grouping
        self.task_dir.mkdir(exist_ok=True)
        clean_dir = self._stage_dir("clean")
        tok_dirs = [self._stage_dir(tokens_stage_name(k)) for k in range(self.cfg.fim_passes)]
        if self.resumed:
            done = sum(done_marker(d, i).is_file() for d in (clean_dir, *tok_dirs) for i in range(len(groups)))
            self.notify(f"resuming: {done} of {len(groups) * (1 + len(tok_dirs))} tasks already done")
        ex.run(clean_task, self._todo(clean_dir, [
            {"repos": g, "filters": self.cfg.filters.to_dict(), "decontam": decon} for g in groups]), desc="data clean")
        lap("clean")
        dedup_file = self._dedup(clean_dir, len(groups))
        train, val = self._split(clean_dir, dedup_file, len(groups))
        lap("dedup")
        val_set = set(val)
        todo = []
        for i, g in enumerate(groups):
            # the passes this task has not finished (all of them, but on a rerun or with a raised N)
            passes = [[k, str(d)] for k, d in enumerate(tok_dirs) if not done_marker(d, i).is_file()]
            if passes:
                todo.append({
                    "index": i, "passes": passes, "clean_file": str(clean_dir / f"{task_name(i)}.jsonl"),
                    "dropped_file": str(dedup_file), "tokenizer": str(self.tok_file), "seed": self.cfg.seed,
                    "fim": asdict(self.cfg.fim_config()),
                    "val_repos": sorted(e["repo"] for e in g if e["repo"] in val_set)})
        ex.run(tokenize_task, self._largest_first(todo), desc="data tokens")
        lap("tokenize")
        manifest = self._pack(clean_dir, dedup_file, tok_dirs, len(groups), train, val)
        lap("pack")
        return manifest

    def _plan(self) -> list[dict]:
        """The repositories and files to read (and the counts of records dropped while listing)."""
        path = self.work / "plan.json"
        if not path.is_file():
            stats = Stats()
            plan = limit_plan(plan_sources(self.cfg.input, self.work, self.cfg.filters.max_bytes, stats),
                              self.cfg.limit_mb)
            if not plan:
                raise ValueError(f"--input {self.cfg.input or '(default corpus)'}: no source files in a "
                                 "supported language found")
            atomic_write_json(path, {"repositories": plan, "stats": stats.to_dict()})
        saved = json.loads(path.read_text())
        self.plan_stats = saved["stats"]
        return saved["repositories"]

    def _decontam_index(self) -> str | None:
        if self.data_dir is None:
            return None
        path = self.work / "decontam.npz"
        if not path.is_file():
            Decontaminator.build(self.data_dir).save(path)
        return str(path)

    def _stage_dir(self, name: str) -> Path:
        stage_dir = self.task_dir / name
        stage_dir.mkdir(exist_ok=True)
        return stage_dir

    def _todo(self, stage_dir: Path, tasks: list[dict]) -> list[dict]:
        """The tasks of a stage (task i covers task group i) that are not marked done, largest first."""
        for i, t in enumerate(tasks):
            t.update(index=i, stage_dir=str(stage_dir))
        return self._largest_first([t for t in tasks if not done_marker(stage_dir, t["index"]).is_file()])

    def _largest_first(self, tasks: list[dict]) -> list[dict]:
        """So one big repository does not start last and run alone (scheduling only)."""
        return sorted(tasks, key=lambda t: (-self.task_bytes[t["index"]], t["index"]))

    def _dedup(self, clean_dir: Path, n_tasks: int) -> Path:
        path = self.task_dir / "dedup.json"
        if path.is_file():
            return path
        items = []
        for i in range(n_tasks):
            meta = json.loads((clean_dir / f"{task_name(i)}.meta.json").read_text())
            sigs = np.load(clean_dir / f"{task_name(i)}.sig.npy")
            for (repo, p, sha, has_sig), sig in zip(meta["items"], sigs):
                items.append((repo, p, sha, sig if has_sig else None))
        with tqdm(total=len(items), desc="data dedup", unit="file", leave=False, disable=None) as bar:
            dropped = find_duplicates(items, progress=bar)
        stats = Stats()
        for reason in dropped.values():
            stats.drop(reason)
        atomic_write_json(path, {"dropped": sorted([r, p, why] for (r, p), why in dropped.items()),
                                 "stats": stats.to_dict()})
        return path

    def _split(self, clean_dir: Path, dedup_file: Path, n_tasks: int) -> tuple[list[str], list[str]]:
        """(train, val) repositories: those with a file left after cleaning and dedup (known before
        tokenising, so that passes after the first skip the validation repositories)."""
        dropped = {(r, p) for r, p, _ in json.loads(dedup_file.read_text())["dropped"]}
        repos = set()
        for i in range(n_tasks):
            for repo, path, *_ in json.loads((clean_dir / f"{task_name(i)}.meta.json").read_text())["items"]:
                if (repo, path) not in dropped:
                    repos.add(repo)
        if not repos:
            raise ValueError("every file was filtered out: nothing to write (see the drop counts with a larger input)")
        return split_repositories(sorted(repos), self.cfg.val_fraction, self.cfg.val_repos)

    def _pack(self, clean_dir: Path, dedup_file: Path, tok_dirs: list[Path], n_tasks: int,
              train: list[str], val: list[str]) -> dict:
        stats = Stats()
        for i in range(n_tasks):
            stats.merge(json.loads((clean_dir / f"{task_name(i)}.meta.json").read_text())["stats"])
            for tok_dir in tok_dirs:    # later passes hold only counts of FIM decisions and tokens
                stats.merge(json.loads((tok_dir / f"{task_name(i)}.meta.json").read_text())["stats"])
        stats.merge(json.loads(dedup_file.read_text())["stats"])
        stats.merge(self.plan_stats)
        self.packing = True
        remove_shards(self.out)
        splits = {}
        for split, names, passes in (("train", train, self.cfg.fim_passes), ("val", val, 1)):
            writer = ShardWriter(self.out, split, self.cfg.seq_len, self.tokenizer.pad_id,
                                 self.cfg.sequences_per_shard, bos_id=self.tokenizer.bos_id,
                                 restart_after_id=self.tokenizer.token_id("file_separator"),
                                 keep_from_ids=(self.tokenizer.token_id("fim_suffix"),
                                                self.tokenizer.token_id("fim_prefix")))
            tokens_per_pass = []
            for k in range(passes):
                # a seeded shuffle of repositories per pass, independent of how they were computed
                before = writer.num_real_tokens
                for r in tqdm(repository_order(names, self.cfg.seed, k), desc=f"data pack {split} pass {k}",
                              unit="repo", leave=False, disable=None):
                    writer.add_document(np.load(tok_dirs[k] / f"{repo_key(r)}.npy"))
                tokens_per_pass.append(writer.num_real_tokens - before)
            shards = writer.close()
            splits[split] = {
                "shards": shards,
                "num_sequences": sum(s["num_sequences"] for s in shards),
                "num_tokens": writer.num_real_tokens,
                "num_repeated_tokens": writer.num_repeated_tokens,
                "num_documents": writer.num_documents,
                "num_repositories": len(names),
                "fim_passes": passes,
                "num_tokens_per_pass": tokens_per_pass,
            }
        splits["val"]["repositories"] = sorted(val)
        manifest = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "seq_len": self.cfg.seq_len, "dtype": "uint32", "byte_order": "little",
            "pad_id": self.tokenizer.pad_id, "bos_id": self.tokenizer.bos_id, "eos_id": self.tokenizer.eos_id,
            "splits": splits,
            "config": self.settings, "seed": self.cfg.seed, "code_version": self.version,
            "tokenizer": {"dir": "tokenizer", "file": self.tok_file.name, "sha256": _file_sha(self.tok_file),
                          "vocab_size": self.tokenizer.vocab_size},
            "decontamination": {"data_dir_used": self.data_dir is not None},
            "validation": ({"rule": "repository-level: the repositories named by --val-repos",
                            "val_repos": list(self.cfg.val_repos)} if self.cfg.val_repos is not None else
                           {"rule": "repository-level: sha256(repo name) as a number in [0,1) < val_fraction; "
                                    "with 2+ repositories at least one in val and one in train",
                            "val_fraction": self.cfg.val_fraction}),
            "packing": {"document": "a repository pack (<bos> files joined by <|file_separator|> <eos>)",
                        "policy": "concatenate in seeded repository order, cut into seq_len windows; "
                                  "a cut document continues as a new segment; the last sequence is padded",
                        "fim_passes": "train: fim_passes renderings of every repository, each with its own FIM "
                                      "decisions and seeded repository order, one pass after another; "
                                      "val: pass 0 only; counts of FIM decisions and tokens in stats count "
                                      "every pass, counts of files count each file once"},
            "stats": stats.to_dict(), "dropped": stats.dropped(),
            "work_fingerprint": self.fingerprint,
        }
        self._copy_tokenizer()
        atomic_write_json(self.out / MANIFEST, manifest)
        return manifest

    def _copy_tokenizer(self) -> None:
        """OUT/tokenizer/: the tokenizer the shards were made with (for inspect and training)."""
        with atomic_dir(self.out / "tokenizer", replace=True) as dest:
            for src in tokenizer_files(self.tok_file.parent):
                shutil.copyfile(src, dest / src.name)


def prepare(cfg: PrepareConfig, executor: ExecutorConfig | None = None,
            notify: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the whole pipeline; returns the manifest. `notify` receives the messages a
    person should see (resuming, nothing to do)."""
    return Preparation(cfg, executor or ExecutorConfig(), notify).run()
