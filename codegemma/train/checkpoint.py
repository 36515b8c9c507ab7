"""Training checkpoints: model, optimiser, step, data position and RNG, written atomically.

Layout of `out/checkpoints/`:

    step_00000100/            one complete checkpoint (a directory appears only when whole)
      trainer.json            step, data position, world size, the config it was written with
      state.pt                one process: {"model", "optim"} state dicts (torch.save)
      *.distcp + .metadata    several processes: torch.distributed.checkpoint (sharded FSDP2 state)
      rng-rank{r}.pt          each process's torch (and CUDA) RNG state
    latest                    the name of the newest complete checkpoint

Everything is written into `.tmp-step_...` and renamed when complete, so a run killed at any
moment leaves the previous checkpoint usable. We load only files we wrote, with
`torch.load(weights_only=True)` (no arbitrary unpickling) for the single-process state.
Model and optimiser state go through `torch.distributed.checkpoint.state_dict`, which names
parameters by their clean path (no wrapper names) and skips frozen (LoRA base) weights.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from codegemma.atomic import atomic_write_text
from codegemma.train.parallel import Runtime, barrier

_OPTIONS = StateDictOptions(ignore_frozen_params=True)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_checkpoint(root: Path, step: int, model, optimizer, trainer: dict, rt: Runtime,
                    keep: int = 2) -> Path:
    """Write `root/step_{step}` (all processes call this together) and point `latest` at it."""
    name = f"step_{step:08d}"
    final, tmp = root / name, root / f".tmp-{name}"
    if rt.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a run killed while writing
        tmp.mkdir()
    barrier(rt)
    model_sd = get_model_state_dict(model, options=_OPTIONS)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_OPTIONS)
    if rt.distributed:
        import torch.distributed.checkpoint as dcp

        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    else:
        torch.save({"model": model_sd, "optim": optim_sd}, tmp / "state.pt")
    torch.save(_rng_state(rt.device), tmp / f"rng-rank{rt.rank}.pt")
    barrier(rt)
    if rt.is_main:
        (tmp / "trainer.json").write_text(json.dumps({**trainer, "step": step, "world": rt.world}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(root / "latest", name + "\n")
        done = sorted(p for p in root.glob("step_*") if p.is_dir())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(rt)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / "trainer.json").is_file():
            return path
    done = sorted(p for p in root.glob("step_*") if (p / "trainer.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path, model, optimizer, rt: Runtime) -> dict:
    """Restore model, optimiser and this process's RNG; returns trainer.json's contents."""
    trainer = json.loads((path / "trainer.json").read_text())
    if (trainer["world"] > 1) != rt.distributed:
        raise ValueError(
            f"{path} was written by {trainer['world']} process(es); resume it with "
            f"{'torchrun --nproc-per-node N' if trainer['world'] > 1 else 'a single process'}")
    if rt.distributed:
        import torch.distributed.checkpoint as dcp

        state = {"model": get_model_state_dict(model, options=_OPTIONS),
                 "optim": get_optimizer_state_dict(model, optimizer, options=_OPTIONS)}
        dcp.load(state, checkpoint_id=str(path))
    else:
        state = torch.load(path / "state.pt", map_location=rt.device, weights_only=True)
        wanted = set(get_model_state_dict(model, options=_OPTIONS))
        if set(state["model"]) != wanted:
            missing = sorted(wanted - set(state["model"]))[:3] or sorted(set(state["model"]) - wanted)[:3]
            raise ValueError(f"{path}: its trainable weights do not match this run's ({missing} ...); resume with "
                             "the options it was written with (same --lora-rank / --lora-targets / --preset or --init)")
    # Not strict: frozen weights (the LoRA base) are not in checkpoints; the trainable set was checked.
    set_model_state_dict(model, state["model"], options=StateDictOptions(ignore_frozen_params=True, strict=False))
    set_optimizer_state_dict(model, optimizer, state["optim"], options=_OPTIONS)
    rng_file = path / f"rng-rank{rt.rank}.pt"
    if rng_file.is_file():  # absent when resuming on more processes than wrote it
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and rt.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], rt.device)
    return trainer
