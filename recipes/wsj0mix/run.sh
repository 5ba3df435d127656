#!/usr/bin/env bash
# wsj0-{2..5}mix: 1 data check (or build a wsj0-mix-style tree from the TTS corpus) -> 2 train -> 3 evaluate.
# Usage (from the repository root):
#   WSJ0MIX=path/to/wsj0-mix recipes/wsj0mix/run.sh                     # the original tree
#   CORPUS=data/corpus WSJ0MIX=data/wsj0mix_tts recipes/wsj0mix/run.sh   # same layout from TTS speech
# The tree: $WSJ0MIX/{C}speakers/wav8k/min/{tr,cv,tt}/{mix,s1..sC}/*.wav. Hyperparameters live in the YAML.
set -euo pipefail

CONF=${CONF:-recipes/wsj0mix/conf.yaml}
STAGE=${STAGE:-1}
STOP=${STOP:-3}
WSJ0MIX=${WSJ0MIX:-data/wsj0-mix}
CORPUS=${CORPUS:-}
RUN=${RUN:-runs/$(basename "$CONF" .yaml | sed 's/^conf/wsj0mix/')}
EXTRA=("$@")

if [ "$STAGE" -le 1 ] && [ "$STOP" -ge 1 ]; then
  if [ ! -d "$WSJ0MIX/2speakers" ]; then
    if [ -z "$CORPUS" ]; then
      echo "no wsj0-mix tree at $WSJ0MIX: set WSJ0MIX, or CORPUS to build one from TTS speech" >&2
      exit 2
    fi
    echo "stage 1: wsj0-mix-style tree from $CORPUS -> $WSJ0MIX"
    voxsep mix --speech "$CORPUS/manifest_8k.jsonl" --out "$WSJ0MIX" --speakers 2-5 \
      --n-mixtures tr=20000,cv=5000,tt=3000 --sample-rate 8000 --mode min --gains wsj0
  fi
fi

if [ "$STAGE" -le 2 ] && [ "$STOP" -ge 2 ]; then
  echo "stage 2: train $CONF -> $RUN"
  voxsep train "$CONF" "run_dir=$RUN" "data.train.root=$WSJ0MIX" "data.valid.root=$WSJ0MIX" "${EXTRA[@]}"
fi

if [ "$STAGE" -le 3 ] && [ "$STOP" -ge 3 ]; then
  echo "stage 3: evaluate on $WSJ0MIX tt (3000 mixtures per count) -> $RUN/eval"
  voxsep evaluate --model "$RUN/best.pt" --data "$WSJ0MIX" --split tt --counts 2-5 --out "$RUN/eval"
fi
