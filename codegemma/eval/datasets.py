"""Benchmark data: the one place that locates it (evaluation and data decontamination alike),
fetches a missing file once, and checks it.

Benchmark folders, in lookup order (`data_dirs`):
  1. `--data-dir DIR` (only DIR when given; it must exist),
  2. `$CODEGEMMA_DATA_DIR` (CI sets it to ../shared/benchmarks),
  3. the cache `~/.cache/codegemma/benchmarks` ($XDG_CACHE_HOME respected).
A file `REL` (e.g. "humaneval/HumanEval.jsonl.gz") is the first DIR/REL that exists; else it is
downloaded from its public source (urls and sha256 from the PROVENANCE.md files of the shared
benchmark folder) into the cache, checked, then renamed into place. Every file is checked against
its sha256 before use, wherever it came from.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from codegemma.atomic import DiskFullError, atomic_file

ENV_DATA_DIR = "CODEGEMMA_DATA_DIR"
_HE_INFILL = ("https://raw.githubusercontent.com/openai/human-eval-infilling/"
              "88062ff9859c875d04db115b698ed4b0f0395170/data/")
_HE_X = ("https://raw.githubusercontent.com/THUDM/CodeGeeX/2838420b7b4492cf3d16bce5320e26e65960c9e2/"
         "codegeex/benchmark/humaneval-x/")
_MXEVAL = ("https://raw.githubusercontent.com/amazon-science/mxeval/"
           "e09974f990eeaf0c0e8f2b5eaff4be66effb2c86/data/")
DATA_HINT = (f"pass --data-dir DIR or set {ENV_DATA_DIR}=DIR (a folder laid out like "
             "../shared/benchmarks: humaneval/, human-eval-infilling/, mbpp/, humaneval-x/, mxeval/)")


@dataclass(frozen=True)
class DataFile:
    relpath: str   # path under a benchmarks folder, as in ../shared/benchmarks
    sha256: str
    url: str


FILES = {
    "humaneval": DataFile(
        "humaneval/HumanEval.jsonl.gz",
        "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        "https://raw.githubusercontent.com/openai/human-eval/master/data/HumanEval.jsonl.gz"),
    "infill-single": DataFile(
        "human-eval-infilling/HumanEval-SingleLineInfilling.jsonl.gz",
        "1277073e7ddce163ef68598c2bca777f688a53df99422f097e37362090f88e1f",
        _HE_INFILL + "HumanEval-SingleLineInfilling.jsonl.gz"),
    "infill-multi": DataFile(
        "human-eval-infilling/HumanEval-MultiLineInfilling.jsonl.gz",
        "2f341612eee1d35da1357a4f365e0c0b3ba6e2b62eb491e88aaefa4855af0349",
        _HE_INFILL + "HumanEval-MultiLineInfilling.jsonl.gz"),
    "infill-span": DataFile(
        "human-eval-infilling/HumanEval-RandomSpanInfilling.jsonl.gz",
        "b4f330d8a8ff97bf85d9def497dffcae4d741e506449386a877236e422e33e8d",
        _HE_INFILL + "HumanEval-RandomSpanInfilling.jsonl.gz"),
    "infill-span-light": DataFile(
        "human-eval-infilling/HumanEval-RandomSpanInfillingLight.jsonl.gz",
        "1432250ecac0cb56e6f97f8faf0970419ef892a98fda7e1f5aa4c4b87209b760",
        _HE_INFILL + "HumanEval-RandomSpanInfillingLight.jsonl.gz"),
    "infill-example": DataFile(
        "human-eval-infilling/example_problem.jsonl",
        "f066a37097c9bc7fb19a8bcb736cbfbc19e42cb0597766066e75ec6b1187ee9c",
        _HE_INFILL + "example_problem.jsonl"),
    "mbpp": DataFile(
        "mbpp/mbpp.jsonl",
        "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f",
        "https://raw.githubusercontent.com/google-research/google-research/"
        "30adf0ec5f35f9609c2f1d896005e184195d9146/mbpp/mbpp.jsonl"),
    "humaneval-x-cpp": DataFile(
        "humaneval-x/humaneval_cpp.jsonl.gz",
        "dcf2e280a1e91bbc3c5f90edb41397e8a9ac1ccc9f5d2b70082f0b0fbfb6dbb0",
        _HE_X + "cpp/data/humaneval_cpp.jsonl.gz"),
    "humaneval-x-go": DataFile(
        "humaneval-x/humaneval_go.jsonl.gz",
        "09126ef64ac68f87296c5f3781186aedc5dec799b114d9df99d6de4a715a7830",
        _HE_X + "go/data/humaneval_go.jsonl.gz"),
    "humaneval-x-java": DataFile(
        "humaneval-x/humaneval_java.jsonl.gz",
        "276f36db2eb7aeb864f36a19a2f4e1bb2460fb6e22ff100f0b5bedabe3799967",
        _HE_X + "java/data/humaneval_java.jsonl.gz"),
    "humaneval-x-js": DataFile(
        "humaneval-x/humaneval_js.jsonl.gz",
        "fe5d467f2c1a027b3f6f18d3729aca01f6458c1de2e2d1292a019c5aa9bed424",
        _HE_X + "js/data/humaneval_js.jsonl.gz"),
    "humaneval-x-python": DataFile(
        "humaneval-x/humaneval_python.jsonl.gz",
        "5752fb122efddb0e9b47c77907ae6ce9a15aac4dea14e44c46032c831e6b987a",
        _HE_X + "python/data/humaneval_python.jsonl.gz"),
    "humaneval-x-rust": DataFile(
        "humaneval-x/humaneval_rust.jsonl.gz",
        "ae5cabbbfc8fe25244a608b04f09ac3b324c645ac969dfc033756c12f0f9924c",
        _HE_X + "rust/data/humaneval_rust.jsonl.gz"),
    "mxeval-csharp": DataFile(
        "mxeval/multilingual_humaneval/HumanEval_csharp_v1.jsonl",
        "fd8b4981c4ae4daadbe06f082cf0ef91b060851bf715faa461d0db23d20a2364",
        _MXEVAL + "multilingual_humaneval/HumanEval_csharp_v1.jsonl"),
    "mxeval-kotlin": DataFile(
        "mxeval/multilingual_humaneval/HumanEval_kotlin_v1.1.jsonl",
        "1324d829effc94e0cb603be8833537f00b5597fcd152fe2d06b623e622feb458",
        _MXEVAL + "multilingual_humaneval/HumanEval_kotlin_v1.1.jsonl"),
    "mbxp-python": DataFile(
        "mxeval/mbxp/mbpp_release_v1.jsonl",
        "2ea7949f20ed5ecaacf4c9970d29430ec3f13772f4dd379665b1234f14b0ec3e",
        _MXEVAL + "mbxp/mbpp_release_v1.jsonl"),
    "mbxp-cpp": DataFile(
        "mxeval/mbxp/mbcpp_release_v1.2.jsonl",
        "34a842515927e230eb2bd6e409a44c80a852b0afcbe1172786bd08cfef8b85b0",
        _MXEVAL + "mbxp/mbcpp_release_v1.2.jsonl"),
    "mbxp-csharp": DataFile(
        "mxeval/mbxp/mbcsp_release_v1.2.jsonl",
        "e11db33a6c5582a5c8d548ef75a23f0307540a765f889dcd2b7d13e99ea538e4",
        _MXEVAL + "mbxp/mbcsp_release_v1.2.jsonl"),
    "mbxp-go": DataFile(
        "mxeval/mbxp/mbgp_release_v1.1.jsonl",
        "90f519222a4c45bdbed8309076433d2f573c6f37329a848581fa789839b67da8",
        _MXEVAL + "mbxp/mbgp_release_v1.1.jsonl"),
    "mbxp-java": DataFile(
        "mxeval/mbxp/mbjp_release_v1.2.jsonl",
        "139a0fcdff2f4c6d456c546c82f43a1f389dfe3125f5f2c3f6a12f478483dffd",
        _MXEVAL + "mbxp/mbjp_release_v1.2.jsonl"),
    "mbxp-js": DataFile(
        "mxeval/mbxp/mbjsp_release_v1.2.jsonl",
        "9e443a1911bcedd8b5193f43d3217666fbf669cd00d54265941a8eb17e396f5a",
        _MXEVAL + "mbxp/mbjsp_release_v1.2.jsonl"),
    "mbxp-kotlin": DataFile(
        "mxeval/mbxp/mbkp_release_v1.2.jsonl",
        "54969bac04fddaad74f78b7aa591348d3f010af2b2325f3db0e5a4f9b9154367",
        _MXEVAL + "mbxp/mbkp_release_v1.2.jsonl"),
}


def cache_root() -> Path:
    """~/.cache/codegemma ($XDG_CACHE_HOME respected): benchmark downloads, prepared toolchain
    support, model hashes."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "codegemma"


def cache_dir() -> Path:
    return cache_root() / "benchmarks"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked(path: Path, spec: DataFile) -> Path:
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise ValueError(f"{path} has sha256 {actual}, expected {spec.sha256}: the file is "
                         f"corrupt or a different version; delete it (it is fetched again from "
                         f"{spec.url}) or replace it with the published file")
    return path


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The benchmark folders to look in, in order (they need not exist)."""
    if data_dir is not None:
        return [Path(data_dir)]
    found = [Path(os.environ[ENV_DATA_DIR])] if os.environ.get(ENV_DATA_DIR) else []
    return found + [cache_dir()]


def benchmarks_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing benchmark folder (for readers of whole folders, e.g. decontamination);
    None when there is none. A --data-dir that does not exist is an error."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir}: no such directory; it must be a "
                                f"benchmarks folder laid out like ../shared/benchmarks")
    return next((d for d in data_dirs(data_dir) if d.is_dir()), None)


def locate(spec: DataFile, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing copy of `spec` (unchecked), or None."""
    return next((d / spec.relpath for d in data_dirs(data_dir) if (d / spec.relpath).is_file()),
                None)


def fetch(spec: DataFile, data_dir: str | os.PathLike | None = None,
          download: bool = True) -> Path:
    """A checked local copy of `spec`, downloading it into the cache when nowhere else."""
    found = locate(spec, data_dir)
    if found is not None:
        return _checked(found, spec)
    if data_dir is not None:
        raise FileNotFoundError(f"{Path(data_dir) / spec.relpath} does not exist: --data-dir must "
                                f"be a benchmarks folder laid out like ../shared/benchmarks "
                                f"(get the file from {spec.url})")
    target = cache_dir() / spec.relpath
    if not download:
        raise FileNotFoundError(f"benchmark file {spec.relpath} is not available offline: put a "
                                f"copy at {target} (from {spec.url}), or {DATA_HINT}")
    try:
        with atomic_file(target, "wb") as out, \
                urllib.request.urlopen(spec.url, timeout=60) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
            out.flush()
            _checked(Path(out.name), spec)
    except DiskFullError:
        raise
    except (urllib.error.URLError, OSError) as exc:
        raise FileNotFoundError(f"could not download {spec.url} ({exc}); put a copy of the file at "
                                f"{target}, or {DATA_HINT}") from None
    return target


def read_records(path: Path) -> list[dict]:
    """JSON Lines, gzip-compressed when the name ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
