"""Support folders for the sandbox's toolchains: prepared once per machine, then mounted read-only.

Some benchmarks' tests need libraries that are no single program on PATH, or a compile that
would be slow without help:
  cpp:    a precompiled <bits/stdc++.h> (MBXP's prompts include it; parsing it takes ~3 s a
          sample, the precompiled header a fraction of that);
  rust:   the crates rand, regex and md5, compiled offline by cargo with Debian's
          /usr/share/cargo/registry as the only source; samples link them with `rustc --extern`
          (about a second a sample, where a cargo build of the crates would take half a minute);
  go:     a Go build cache holding testify and the standard packages the tests import, so a
          sample compiles only its own package;
  csharp: the Compare-Net-Objects stand-in (support/CompareNetObjects.cs) compiled to a library;
  js:     the js-md5 stand-in (support/js-md5.js).
The folder is <cache>/toolchains/<language>-<key>; the key hashes the toolchain's files (a new
compiler or crate version gets a new folder). It is built from trusted inputs only, outside the
sandbox, in a temporary folder renamed into place, under a lock so concurrent scorers build it
once. Inside the sandbox it is read-only: nothing a sample does can change what the next links.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from codegemma.atomic import atomic_dir
from codegemma.eval import languages
from codegemma.eval.datasets import cache_root
from codegemma.eval.sandbox import SANDBOX_PATH

RECIPE_VERSION = "1"  # bump when a recipe below changes: prepared folders are rebuilt
SUPPORT_SOURCES = Path(__file__).with_name("support")
PREPARE_TIMEOUT_S = 900

CARGO_TOML = """[package]
name = "codegemma-sandbox-crates"
version = "0.0.0"
edition = "2021"

[lib]
path = "src/lib.rs"

[dependencies]
rand = "0.8"
# Debian packages regex without its optional accelerators (aho-corasick, memchr)
regex = { version = "1", default-features = false, features = ["std", "unicode"] }
md5 = "0.7"

[profile.dev]
debug = 0
"""

GO_WARM = """package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	_ "bufio"
	_ "bytes"
	_ "crypto/md5"
	_ "encoding/json"
	_ "fmt"
	_ "math"
	_ "math/rand"
	_ "os"
	_ "reflect"
	_ "regexp"
	_ "sort"
	_ "strconv"
	_ "strings"
	_ "time"
	_ "unicode"
)

func TestWarm(t *testing.T) { assert.New(t).Equal(1, 1) }
"""


def _tool(name: str) -> str:
    path = shutil.which(name, path=SANDBOX_PATH)
    if path is None:
        raise ValueError(f"{name} is not installed in {SANDBOX_PATH} (see `codegemma eval list`)")
    return path


def _run(argv: list[str], cwd: Path, env: dict, what: str) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=PREPARE_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-600:]
        raise ValueError(f"could not prepare {what} for the sandbox ({' '.join(argv[:3])} failed: "
                         f"{tail})")


def _env(**extra: str) -> dict:
    # The toolchain samples will use: the sandbox's PATH, not the caller's (a rustup rustc under
    # ~/.cargo builds crates the sandbox's /usr/bin/rustc cannot link).
    return {"PATH": SANDBOX_PATH, "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
            **extra}


def _prepare_cpp(out: Path, work: Path) -> None:
    # Compiled with the flags of every sample's compile (languages.CPP_FLAGS): GCC uses a
    # precompiled header only when they match, and falls back to the header otherwise.
    (out / "bits").mkdir()
    (work / "all.h").write_text("#include <bits/stdc++.h>\n")
    _run([_tool("g++"), *languages.CPP_FLAGS, "-x", "c++-header", str(work / "all.h"),
          "-o", str(out / "bits" / "stdc++.h.gch")], work, _env(), "the precompiled C++ header")


def _prepare_rust(out: Path, work: Path) -> None:
    project = work / "crates"
    (project / "src").mkdir(parents=True)
    (project / "src" / "lib.rs").write_text("")
    (project / "Cargo.toml").write_text(CARGO_TOML)
    (project / ".cargo").mkdir()
    (project / ".cargo" / "config.toml").write_text(
        '[source.crates-io]\nreplace-with = "debian"\n\n[source.debian]\n'
        f'directory = "{languages.CARGO_REGISTRY}"\n')
    env = _env(CARGO_HOME=str(work / "cargo-home"), RUSTC=_tool("rustc"),
               CARGO_TARGET_DIR=str(work / "target"))
    _run([_tool("cargo"), "build", "--offline", "--quiet"], project, env,
         "the Rust crates " + ", ".join(languages.RUST_CRATES))
    deps = work / "target" / "debug" / "deps"
    (out / "deps").mkdir()
    (out / "extern").mkdir()
    for rlib in deps.glob("*.rlib"):
        shutil.copy(rlib, out / "deps" / rlib.name)
    for crate in languages.RUST_CRATES:
        found = sorted(deps.glob(f"lib{crate}-*.rlib"))
        if len(found) != 1:
            raise ValueError(f"could not prepare the Rust crates: cargo built {len(found)} "
                             f"lib{crate} libraries in {deps}")
        shutil.copy(found[0], out / "extern" / f"lib{crate}.rlib")


def _prepare_go(out: Path, work: Path) -> None:
    (work / "warm_test.go").write_text(GO_WARM)
    env = _env(**dict(kv.split("=", 1) for kv in languages.go_env(str(out))), TMPDIR=str(work))
    _run([_tool("go"), "test", "-c", "-o", "warm.test", "warm_test.go"], work, env,
         "the Go build cache (testify)")


def _prepare_csharp(out: Path, work: Path) -> None:
    _run([_tool("mcs"), "-nologo", "-target:library",
          f"-out:{out / 'KellermanSoftware.CompareNetObjects.dll'}",
          str(SUPPORT_SOURCES / "CompareNetObjects.cs")], work, _env(),
         "the C# Compare-Net-Objects stand-in")


def _prepare_js(out: Path, work: Path) -> None:
    shutil.copy(SUPPORT_SOURCES / "js-md5.js", out / "js-md5.js")


RECIPES = {"cpp": _prepare_cpp, "rust": _prepare_rust, "go": _prepare_go, "csharp": _prepare_csharp, "js": _prepare_js}


def _key(language: str) -> str:
    """Changes when the toolchain, the libraries or our recipe do."""
    digest = hashlib.sha256(f"{RECIPE_VERSION} {language} {sys.platform}".encode())
    runner = languages.RUNNERS[language]
    watched = [shutil.which(t, path=SANDBOX_PATH) or t for t in runner.tools]
    if language == "rust":
        watched += sorted(glob.glob(os.path.join(languages.CARGO_REGISTRY, "*")))
    if language == "go":
        watched.append(os.path.join(languages.GOPATH, "src/github.com/stretchr/testify/assert"))
        digest.update(" ".join(languages.go_env("")).encode())
    if language == "cpp":  # a precompiled header is used only under the flags it was built with
        digest.update(" ".join(languages.CPP_FLAGS).encode())
    for path in watched:
        try:
            st = os.stat(path)
            digest.update(f"{os.path.realpath(path)} {st.st_size} {st.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"{path} absent".encode())
    for source in sorted(SUPPORT_SOURCES.iterdir()):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def support_dir(language: str, progress=None) -> Path | None:
    """The prepared support folder for `language` (host path), building it on first use; None
    for languages that need none. `progress(message)` is told before a build starts."""
    if language not in RECIPES:
        return None
    root = cache_root() / "toolchains"
    target = root / f"{language}-{_key(language)}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and reuse its folder
        if target.is_dir():
            return target
        if progress is not None:
            progress(f"preparing {languages.RUNNERS[language].title} support for the sandbox in "
                     f"{target} (once per machine)")
        with tempfile.TemporaryDirectory(prefix="codegemma-prepare-") as work, \
                atomic_dir(target) as out:
            RECIPES[language](out, Path(work))
    return target


def mounted(language: str, unsafe: bool, progress=None) -> tuple[dict[str, str], str]:
    """(read-only binds for the sandbox, the support folder as samples see it): mounted at
    SUPPORT_MOUNT inside a sandbox, used in place without one; ({}, "") when none is needed."""
    host = support_dir(language, progress)
    if host is None:
        return {}, ""
    if unsafe:
        return {}, str(host)
    return {languages.SUPPORT_MOUNT: str(host)}, languages.SUPPORT_MOUNT
