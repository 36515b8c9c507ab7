#!/usr/bin/env bash
# Build codegemma-nano on the GPU machine over one or more calls: corpus -> tokenizer -> data ->
# train -> export. Run from the repository root with the wheels in .whl/ and the benchmark data in
# .bench/ (see scripts/nano/README.md). The work directory .nano/ is git-ignored, so it stays on a
# warm machine between calls: the first call prepares the data and starts training, later calls
# resume from the last checkpoint. Every call leaves the latest model and logs in $OUT as a split tar;
# NANO_EVAL=1 also runs the three HumanEval benchmarks on it (samples in keep/eval/).
set -euo pipefail
T0=$(date +%s)
BUDGET=${NANO_BUDGET_S:-570}          # seconds for this call
STEPS=${NANO_STEPS:?set NANO_STEPS, the total optimizer steps of the whole run}
[ -d /tmp/site/tree_sitter ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
W=${NANO_WORK:-/tmp/nano-w}
[ "${NANO_FRESH:-0}" = 1 ] && rm -rf "$W"
mkdir -p "$W"
if [ ! -f "$W/data/manifest.json" ]; then
  python3 scripts/nano/build_corpus.py --out "$W/corpus" --max-mb-per-package "${NANO_MB_PER_PACKAGE:-120}"
  if [ -n "${NANO_INIT:-}" ]; then   # continued pretraining: keep the model's own tokenizer
    cp -r "$NANO_INIT" "$W/tok"
  else
    python3 -m codegemma tokenizer train --input "$W/corpus/corpus.jsonl" --vocab-size 8192 --out "$W/tok" --limit-mb 80
  fi
  python3 -m codegemma data prepare --input "$W/corpus/corpus.jsonl" --out "$W/data" --tokenizer "$W/tok" \
    --seq-len 2048 --fim-rate 0.9 --spm-rate "${NANO_SPM_RATE:-0.5}" --fim-passes "${NANO_FIM_PASSES:-3}" --seed 0 --workers 16 --data-dir .bench
  python3 -m codegemma data stats "$W/data" > "$W/data_stats.txt" || true
  echo "data ready after $(( $(date +%s) - T0 )) s"
fi
RESUME=""
[ -d "$W/run/checkpoints" ] && RESUME=--resume
LEFT=$(( BUDGET - ($(date +%s) - T0) - 45 ))
echo "training for $LEFT s $RESUME"
START="--preset nano"
[ -n "${NANO_INIT:-}" ] && START="--init $NANO_INIT"
python3 -m codegemma train --data "$W/data" --out "$W/run" $START --compile --no-progress $RESUME \
  --steps "$STEPS" --max-minutes "$(python3 -c "print($LEFT/60)")" \
  --micro-batch 64 --batch-tokens 131072 --lr "${NANO_LR:-2e-3}" --warmup-steps "${NANO_WARMUP:-200}" --min-lr-ratio 0.05 \
  --val-every 500 --ckpt-every 100000 --log-every 20 --seed 0
rm -rf "$W/keep"; mkdir -p "$W/keep"
cp -r "$W/run/final" "$W/keep/nano"
cp "$W/run/metrics.jsonl" "$W/run/loss.png" "$W/data_stats.txt" "$W/corpus/licences.json" "$W/keep/"
cp "$W/data/manifest.json" "$W/keep/data_manifest.json"
cp "$W/data/stats.png" "$W/keep/data_stats.png" 2>/dev/null || true
tar -C "$W" -cf - keep | split -b 15m - "$OUT/nano.tar.part-"
if [ "${NANO_EVAL:-0}" = 1 ]; then   # the benchmarks on this disposable machine (no bubblewrap here:
  # --unsafe); the samples come back in eval.tar and are scored again in the sandbox elsewhere
  for b in humaneval-infill-single humaneval-infill-multi humaneval; do
    python3 -m codegemma eval run --benchmark "$b" --model "$W/keep/nano" --out "$W/eval/$b" \
      --data-dir .bench --device cuda --dtype float32 --batch-size 128 --workers 16 --unsafe-no-sandbox 2>&1 | tail -1
    tar -C "$W" -cf "$OUT/eval.tar" eval   # after each benchmark: a call cut off keeps what is done
  done
fi
ls -la "$OUT"; echo "total $(( $(date +%s) - T0 )) s"
