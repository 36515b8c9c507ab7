#!/usr/bin/env bash
# Build codegemma-nano on the GPU machine over one or more calls: corpus -> tokenizer -> data ->
# train -> export. Run from the repository root with the wheels in .whl/ and the benchmark data in
# .bench/ (see scripts/nano/README.md). The work directory is kept on a warm machine between calls:
# the first call prepares the data and starts training, later calls resume from the last
# checkpoint. Every call leaves the latest model(s) and logs in $OUT as a split tar;
# NANO_EVAL=1 also runs the three HumanEval benchmarks on them (samples in keep/eval/).
#
# NANO_VARIANTS="a b ..." trains one model per variant on the same data, variant i on GPU i, in
# parallel (a machine with several GPUs). NANO_SHAPE_<v> holds JSON overrides of the nano preset's
# shape for variant v (e.g. '{"num_hidden_layers": 12, "hidden_size": 320}'); none = the preset.
set -euo pipefail
T0=$(date +%s)
BUDGET=${NANO_BUDGET_S:-570}          # seconds for this call
STEPS=${NANO_STEPS:?set NANO_STEPS, the total optimizer steps of the whole run}
VARIANTS=${NANO_VARIANTS:-nano}
[ -d /tmp/site/tree_sitter ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
W=${NANO_WORK:-/tmp/nano-w}
[ "${NANO_FRESH:-0}" = 1 ] && rm -rf "$W"
mkdir -p "$W"
if [ ! -f "$W/data/manifest.json" ]; then
  python3 scripts/nano/build_corpus.py --out "$W/corpus" --max-mb-per-package "${NANO_MB_PER_PACKAGE:-120}" \
    --suffixes "${NANO_SUFFIXES:-.py}" ${NANO_ONLY:+--only "$NANO_ONLY"}
  if [ -n "${NANO_INIT:-}" ]; then   # continued pretraining: keep the model's own tokenizer
    cp -r "$NANO_INIT" "$W/tok"
  else
    python3 -m codegemma tokenizer train --input "$W/corpus/corpus.jsonl" --vocab-size 8192 --out "$W/tok" --limit-mb 80
  fi
  python3 -m codegemma data prepare --input "$W/corpus/corpus.jsonl" --out "$W/data" --tokenizer "$W/tok" \
    --seq-len 2048 --fim-rate 0.9 --spm-rate "${NANO_SPM_RATE:-0.5}" --fim-passes "${NANO_FIM_PASSES:-3}" \
    --fim-statement-rate "${NANO_STATEMENT_RATE:-0.3}" --fim-path-rate "${NANO_PATH_RATE:-1.0}" \
    ${NANO_VAL_REPOS:+--val-repos "$NANO_VAL_REPOS"} --seed 0 --workers "$(nproc)" --data-dir .bench
  python3 -m codegemma data stats "$W/data" > "$W/data_stats.txt" || true
  echo "data ready after $(( $(date +%s) - T0 )) s"
fi
LEFT=$(( BUDGET - ($(date +%s) - T0) - 45 ))
gpu=0
for v in $VARIANTS; do
  R="$W/run-$v"
  RESUME=""
  [ -d "$R/checkpoints" ] && RESUME=--resume
  START="--preset nano"
  [ -n "${NANO_INIT:-}" ] && START="--init $NANO_INIT"
  shape_var="NANO_SHAPE_$v"
  if [ -n "${!shape_var:-}" ]; then   # random weights of the nano preset with another shape
    [ -d "$W/init-$v" ] || python3 - "$W/init-$v" "$W/tok" "${!shape_var}" <<'EOF'
import json, sys
from codegemma.model.checkpoint import save_model
from codegemma.model.config import get_preset
from codegemma.model.transformer import Gemma
from codegemma.tokenizer import Tokenizer
out, tok, shape = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = get_preset("nano").replace(vocab_size=Tokenizer.load(tok).vocab_size, **shape)
model = Gemma(config).init_weights(0)
save_model(model, config, out, tokenizer_dir=tok)
print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {shape}")
EOF
    START="--init $W/init-$v"
  fi
  echo "variant $v on GPU $gpu: training for $LEFT s $RESUME $START"
  CUDA_VISIBLE_DEVICES=$gpu python3 -m codegemma train --data "$W/data" --out "$R" $START --compile --no-progress $RESUME \
    --steps "$STEPS" --max-minutes "$(python3 -c "print($LEFT/60)")" \
    --micro-batch 64 --batch-tokens 131072 --lr "${NANO_LR:-2e-3}" --warmup-steps "${NANO_WARMUP:-200}" --min-lr-ratio 0.05 \
    --val-every 500 --ckpt-every 100000 --log-every 20 --seed 0 > "$W/train-$v.log" 2>&1 &
  gpu=$((gpu + 1))
done
wait
rm -rf "$W/keep"; mkdir -p "$W/keep"
for v in $VARIANTS; do
  tail -3 "$W/train-$v.log"
  mkdir -p "$W/keep/$v"
  # bfloat16 on disk whatever the run's master dtype (a --init of float32 random weights exports float32)
  python3 -c "import sys, torch; from codegemma.model.checkpoint import load_model, save_model; \
m, c = load_model(sys.argv[1], device='cpu', dtype=torch.float32); \
save_model(m, c, sys.argv[2], dtype=torch.bfloat16, tokenizer_dir=sys.argv[1])" "$W/run-$v/final" "$W/keep/$v/nano"
  cp "$W/run-$v/metrics.jsonl" "$W/run-$v/loss.png" "$W/train-$v.log" "$W/keep/$v/"
done
cp "$W/data_stats.txt" "$W/corpus/licences.json" "$W/keep/"
cp "$W/data/manifest.json" "$W/keep/data_manifest.json"
cp "$W/data/stats.png" "$W/keep/data_stats.png" 2>/dev/null || true
tar -C "$W" -cf - keep | split -b 15m - "$OUT/nano.tar.part-"
if [ "${NANO_EVAL:-0}" = 1 ]; then   # the benchmarks on this disposable machine (no bubblewrap here:
  # --unsafe); the samples come back in eval.tar and are scored again in the sandbox elsewhere
  for v in $VARIANTS; do
    for b in humaneval-infill-single humaneval-infill-multi humaneval; do
      python3 -m codegemma eval run --benchmark "$b" --model "$W/keep/$v/nano" --out "$W/eval/$v/$b" \
        --data-dir .bench --device cuda --dtype float32 --batch-size 128 --workers 16 --unsafe-no-sandbox 2>&1 | tail -1
      tar -C "$W" -cf "$OUT/eval.tar" eval   # after each benchmark: a call cut off keeps what is done
    done
  done
fi
ls -la "$OUT"; echo "total $(( $(date +%s) - T0 )) s"
