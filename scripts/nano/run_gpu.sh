#!/usr/bin/env bash
# Build codegemma-nano on the GPU machine in one call: corpus -> tokenizer -> data -> train -> export.
# Run from the repository root with the wheels in .whl/ and the benchmark data in .bench/ (see
# scripts/nano/README.md); everything worth keeping lands in $OUT as a split tar.
set -euo pipefail
T0=$(date +%s)
BUDGET=${NANO_BUDGET_S:-540}          # seconds for the whole script
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
W=/tmp/nano; rm -rf $W; mkdir -p $W
python3 scripts/nano/build_corpus.py --out $W/corpus --max-mb-per-package ${NANO_MB_PER_PACKAGE:-8}
python3 -m codegemma tokenizer train --input $W/corpus/corpus.jsonl --vocab-size 8192 --out $W/tok --limit-mb 60
python3 -m codegemma data prepare --input $W/corpus/corpus.jsonl --out $W/data --tokenizer $W/tok \
  --seq-len 2048 --fim-rate 0.9 --spm-rate 0.5 --seed 0 --workers 16 --data-dir .bench
python3 -m codegemma data stats $W/data > $W/data_stats.txt || true
LEFT=$(( BUDGET - ($(date +%s) - T0) - 75 ))
echo "training for $LEFT s"
python3 -m codegemma train --data $W/data --out $W/run --preset nano --compile --no-progress \
  --steps ${NANO_STEPS:-2000} --max-minutes $(python3 -c "print($LEFT/60)") \
  --micro-batch 16 --batch-tokens 131072 --lr 2e-3 --warmup-steps 100 --min-lr-ratio 0.05 \
  --val-every 250 --ckpt-every 100000 --log-every 10 --seed 0
mkdir -p $W/keep
cp -r $W/run/final $W/keep/nano
cp $W/run/metrics.jsonl $W/run/loss.png $W/data_stats.txt $W/corpus/licences.json $W/keep/
cp $W/data/manifest.json $W/keep/data_manifest.json
cp $W/data/stats.png $W/keep/data_stats.png 2>/dev/null || true
tar -C $W -cf - keep | split -b 15m - $OUT/nano.tar.part-
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
