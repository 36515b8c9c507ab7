"""The training loop: pretraining on packed shards, instruction tuning, fine-tuning (full or LoRA).

One function, `train(cfg)`, on one process or under torchrun. Order of set-up (torchtitan's):
data -> model (fp32 master weights) -> LoRA -> activation checkpointing -> compile -> FSDP2 ->
optimiser -> resume. Each optimizer step takes `accum` micro-batches from every process.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import torch

from codegemma.train import checkpoint as ckpt
from codegemma.train.config import TrainConfig
from codegemma.train.data import IGNORE, RowStream, make_batch
from codegemma.train.metrics import MetricsLog, Progress, attended_squares, peak_tflops, plot_losses, step_flops
from codegemma.train.parallel import (Runtime, all_reduce_sum, apply_activation_checkpointing, apply_compile,
                                      apply_fsdp, barrier, close_runtime, init_runtime)
from codegemma.train.setup import build_data, build_model, build_optimizer, lr_at, model_config
from codegemma.train.step import (CausalLMLoss, attention_mask, autocast, forward_backward, mask_kind,
                                  optimizer_step, resolve_precision, to_device)


def train(cfg: TrainConfig) -> dict:
    """Run or resume a training run. Ctrl-C during the steps ends the current step, writes a
    checkpoint and raises KeyboardInterrupt (the command then says how to resume)."""
    rt = init_runtime(cfg.device)
    try:
        with StopOnInterrupt() as interrupt:
            result = _train(cfg, rt, interrupt)
        # Every rank leaves together: a rank that tears down gloo while another still writes the export
        # aborts the whole group ("terminate called without an active exception").
        barrier(rt)
        return result
    finally:
        close_runtime(rt)


class StopOnInterrupt:
    """SIGINT while `armed` (during the steps) asks the loop to stop after the current step with a
    checkpoint; a second Ctrl-C, or one during set-up, stops at once as usual."""

    def __init__(self):
        self.requested = self.armed = False
        self._previous = None

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if not self.armed or self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ntrain: Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)


def _geometry(cfg: TrainConfig, seq_len: int, rt: Runtime) -> tuple[int, int]:
    """(gradient accumulation steps, global tokens per optimizer step)."""
    per_micro = seq_len * cfg.micro_batch * rt.world
    batch_tokens = cfg.batch_tokens or per_micro
    if batch_tokens % per_micro:
        raise ValueError(f"--batch-tokens {batch_tokens} must be a multiple of seq_len x micro_batch x processes "
                         f"= {seq_len} x {cfg.micro_batch} x {rt.world} = {per_micro}")
    return batch_tokens // per_micro, batch_tokens


def _check_out(cfg: TrainConfig, rt: Runtime) -> Path:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a directory for the run")
    if not cfg.resume and ckpt.latest_checkpoint(out / "checkpoints") is not None:
        raise ValueError(f"{out} already holds checkpoints of a run; add --resume to continue it "
                         "or choose a new --out")
    return out


def _validate(module, data, cfg: TrainConfig, rt: Runtime, compute_dtype, masks: str) -> float:
    """Mean loss per target token over a fixed slice of the held-out rows (the same every time)."""
    module.eval()
    total = torch.zeros(2, dtype=torch.float64, device=rt.device)
    n = len(data)
    # no more batches than it takes to see every row once: a small val split is not re-read 8 times
    batches = min(cfg.val_batches, -(-n // (cfg.micro_batch * rt.world)))
    with torch.no_grad():
        for b in range(batches):
            start = (b * rt.world + rt.rank) * cfg.micro_batch
            rows = [data[(start + j) % n] for j in range(cfg.micro_batch)]
            batch = to_device(make_batch(rows, cfg.doc_mask), rt.device)
            mask = attention_mask(batch["segments"], masks)
            with autocast(rt.device, compute_dtype):
                loss = module(batch["tokens"], batch["labels"], batch["positions"], mask)
            total[0] += loss.double()
            total[1] += (batch["labels"] != IGNORE).sum()
    module.train()
    all_reduce_sum(total, rt)
    return float(total[0] / total[1].clamp(min=1))


def _export(cfg: TrainConfig, module, config, tokenizer_dir, out: Path, rt: Runtime) -> Path | None:
    """Merged full-precision weights -> a plain Gemma -> save_model (a Hugging Face directory)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from codegemma.model.checkpoint import save_model
    from codegemma.model.transformer import Gemma
    from codegemma.train.lora import merged_state_dict, save_adapter

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not rt.is_main:
        return None
    state = {k.removeprefix("model."): v for k, v in state.items()}
    if cfg.lora_rank:
        save_adapter(state, out / "adapter", cfg.lora_rank, cfg.lora_scale * cfg.lora_rank, cfg.lora_targets,
                     cfg.lora_dropout, cfg.init)
        state = merged_state_dict(state, cfg.lora_scale)
    with torch.device("meta"):
        plain = Gemma(config)
    plain.load_state_dict(state, strict=True, assign=True)
    return save_model(plain, config, out / "final", dtype=config.torch_dtype,
                      tokenizer_dir=str(tokenizer_dir) if tokenizer_dir else None)


def _should_stop(deadline: float | None, interrupt: StopOnInterrupt, rt: Runtime) -> bool:
    """Whether the --max-minutes budget is spent or Ctrl-C was pressed; all processes stop together."""
    over = deadline is not None and time.monotonic() >= deadline
    if rt.distributed:  # one process's Ctrl-C or clock stops them all at the same step
        flags = all_reduce_sum(torch.tensor([float(interrupt.requested), float(over)], device=rt.device), rt)
        interrupted, over = bool(flags[0].item() > 0), bool(flags[1].item() > 0)
        interrupt.requested = interrupt.requested or interrupted
    return interrupt.requested or over


def _train(cfg: TrainConfig, rt: Runtime, interrupt: StopOnInterrupt) -> dict:
    out = _check_out(cfg, rt)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, model_config(cfg).max_position_embeddings)  # data errors before a slow load
    accum, batch_tokens = _geometry(cfg, data.seq_len, rt)
    model, config = build_model(cfg, rt, data.tokenizer_dir, data.seq_len)
    compute_dtype = resolve_precision(cfg.precision, rt.device)
    masks = mask_kind(cfg.doc_mask, rt.device, cfg.compile)

    if cfg.lora_rank:
        from codegemma.train.lora import apply_lora

        apply_lora(model, cfg.lora_rank, cfg.lora_scale, cfg.lora_targets, cfg.lora_dropout, cfg.seed)
    module = CausalLMLoss(model, cfg.loss_chunk, compile_loss=cfg.compile)
    apply_activation_checkpointing(model, cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(model)
    if rt.distributed:
        apply_fsdp(module, model.layers, compute_dtype)
    module.to(rt.device)
    optimizer = build_optimizer(cfg, module, rt.device)
    params = [p for p in module.parameters() if p.requires_grad]

    stream = RowStream(data.train, cfg.seed, rt.rank, rt.world)
    log = MetricsLog(out / "metrics.jsonl", enabled=rt.is_main, tensorboard_dir=out / "tensorboard")
    step = 0
    found = ckpt.latest_checkpoint(out / "checkpoints") if cfg.resume else None
    if found is not None:
        trainer = ckpt.load_checkpoint(found, module, optimizer, rt)
        step = int(trainer["step"])
        stream.load_state_dict(trainer["data"])
        log.truncate_after(step)
        if rt.is_main:
            more = "" if step < cfg.steps else "; nothing left to train (pass a larger --steps to go on)"
            print(f"train: resuming {out} from {found.name}: step {step} of {cfg.steps} done "
                  f"({step * batch_tokens:,} tokens, {stream.epoch:.2f} epochs){more}", file=sys.stderr, flush=True)
    else:
        if cfg.resume and rt.is_main:
            print(f"train: --resume: no checkpoint in {out / 'checkpoints'} yet; starting at step 0",
                  file=sys.stderr, flush=True)
        log.truncate_after(-1)  # a fresh start: no lines of an earlier attempt that never checkpointed

    peak = cfg.peak_tflops or (peak_tflops(torch.cuda.get_device_name(rt.device)) if rt.device.type == "cuda" else None)
    progress = Progress(cfg.steps, step, bar=cfg.progress) if rt.is_main else None
    if rt.is_main and cfg.export and data.tokenizer_dir is None:
        print("train: no tokenizer found (no --tokenizer, none in the data directory or --init); "
              "final/ will hold weights only", file=sys.stderr)
    preset_context = model_config(cfg).max_position_embeddings if cfg.preset else config.max_position_embeddings
    if rt.is_main and step == 0 and config.max_position_embeddings > preset_context:  # see preset_config
        print(f"train: the {cfg.preset} preset's context ({preset_context} positions) is raised to the "
              f"data's {data.seq_len}-token rows", file=sys.stderr)
    if rt.is_main and step == 0:
        log.write({"kind": "run", "step": 0, "params": config.num_parameters(),
                   "trainable": sum(p.numel() for p in params),
                   "seq_len": data.seq_len, "accum": accum, "batch_tokens": batch_tokens, "world": rt.world,
                   "rows": len(data.train), "precision": str(compute_dtype or torch.float32),
                   "doc_mask": masks})

    last_val = None
    t_last, tokens_since, flops_since = time.perf_counter(), 0, 0.0
    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else None
    interrupt.armed = True
    while step < cfg.steps:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = [make_batch(stream.next_rows(cfg.micro_batch), cfg.doc_mask) for _ in range(accum)]
        vocab_max = max(int(b["tokens"].max()) for b in batches)
        if vocab_max >= config.vocab_size:
            raise ValueError(f"token id {vocab_max} >= the model's vocab_size {config.vocab_size}: the data was "
                             "made with another tokenizer; re-pack it or pick a matching --preset/--init")
        # Normalise by the target tokens of the whole global batch: every token weighs the same,
        # however they fall across micro-batches and processes. FSDP2 averages gradients over the
        # processes, hence the factor `world`.
        targets = float(sum(int((b["labels"] != IGNORE).sum()) for b in batches))  # counted on the CPU
        if rt.distributed:
            targets = float(all_reduce_sum(torch.tensor(targets, device=rt.device), rt))
        scale = rt.world / max(targets, 1.0)
        loss_sum = forward_backward(module, batches, scale, rt.device, compute_dtype, masks, rt.distributed)
        grad_norm = optimizer_step(params, optimizer, cfg.grad_clip)
        step += 1
        last = step == cfg.steps or _should_stop(deadline, interrupt, rt)
        tokens_since += batch_tokens
        # every process sees its own rows; they are alike in expectation, so scale by `world`
        attended = sum(attended_squares(b["segments"], masks != "off") for b in batches) * rt.world
        flops_since += step_flops(config, batch_tokens, attended)

        if step % cfg.log_every == 0 or last:
            loss_value = float(all_reduce_sum(loss_sum, rt)) / rt.world
            elapsed = time.perf_counter() - t_last
            tps = tokens_since / elapsed if elapsed > 0 else 0.0
            record = {"kind": "train", "step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                      "tokens": step * batch_tokens, "epoch": stream.epoch, "tokens_per_s": tps}
            if peak:
                record["mfu"] = flops_since / elapsed / (peak * 1e12 * rt.world)
            log.write(record)
            if progress is not None:
                progress.logged(loss_value, lr, tps)
            t_last, tokens_since, flops_since = time.perf_counter(), 0, 0.0
        if progress is not None:
            progress.step(step, last)
        if data.val is not None and cfg.val_every and (step % cfg.val_every == 0 or (last and not interrupt.requested)):
            last_val = _validate(module, data.val, cfg, rt, compute_dtype, masks)
            log.write({"kind": "val", "step": step, "loss": last_val})
        if cfg.ckpt_every and (step % cfg.ckpt_every == 0 or last):
            ckpt.save_checkpoint(out / "checkpoints", step, module, optimizer,
                                 {"data": stream.state_dict(), "config": cfg.to_dict()}, rt, cfg.keep_checkpoints)
        if last:
            break

    interrupt.armed = False
    if progress is not None:
        progress.close()
    if interrupt.requested:
        log.close()
        raise KeyboardInterrupt  # after the step's checkpoint; `codegemma train` says how to resume
    final = _export(cfg, module, config, data.tokenizer_dir, out, rt) if cfg.export else None
    plot = plot_losses(out / "metrics.jsonl", out / "loss.png") if rt.is_main else None
    log.close()
    return {"steps": step, "final": str(final) if final else None, "plot": str(plot) if plot else None,
            "val_loss": last_val, "out": str(out)}
