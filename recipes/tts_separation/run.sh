#!/usr/bin/env bash
# Separation of 1-5 talkers on the offline TTS corpus.
# Stages: 1 corpus -> 2 fixed valid/test mixtures -> 3 train -> 4 evaluate (true and estimated count).
# Usage (from the repository root):
#   recipes/tts_separation/run.sh                       # all stages, CPU config
#   CONF=recipes/tts_separation/conf_paper.yaml STAGE=3 recipes/tts_separation/run.sh
#   CORPUS=data/corpus STAGE=2 recipes/tts_separation/run.sh   # reuse a built corpus
# Hyperparameters live in the YAML; this script passes only paths. Every stage resumes if re-run.
set -euo pipefail

CONF=${CONF:-recipes/tts_separation/conf.yaml}
STAGE=${STAGE:-1}
STOP=${STOP:-4}
DATA=${DATA:-data/tts_separation}
CORPUS=${CORPUS:-$DATA/corpus}
MIX=${MIX:-$DATA/mixtures}
RUN=${RUN:-runs/$(basename "$CONF" .yaml | sed 's/^conf/tts_separation/')}
IDENTITIES=${IDENTITIES:-200}        # corpus size (voice identities x sentences each)
UTTERANCES=${UTTERANCES:-50}
N_VALID=${N_VALID:-100}              # fixed mixtures per talker count
N_TEST=${N_TEST:-300}
EXTRA=("$@")                         # more key=value overrides for `voxsep train`

if [ "$STAGE" -le 1 ] && [ "$STOP" -ge 1 ]; then
  echo "stage 1: speech corpus -> $CORPUS"
  if [ ! -f "$CORPUS/READY" ]; then
    voxsep corpus --out "$CORPUS" --identities "$IDENTITIES" --utterances-per-identity "$UTTERANCES" \
      --rates 8000,16000
  fi
fi

if [ "$STAGE" -le 2 ] && [ "$STOP" -ge 2 ]; then
  echo "stage 2: fixed validation/test mixtures of 1-5 talkers -> $MIX"
  if [ ! -f "$MIX/manifest_tt.jsonl" ]; then
    voxsep mix --speech "$CORPUS/manifest_8k.jsonl" --out "$MIX" --speakers 1-5 \
      --n-mixtures "cv=$N_VALID,tt=$N_TEST" --splits cv,tt --sample-rate 8000 --mode min --gains wsj0
  fi
fi

if [ "$STAGE" -le 3 ] && [ "$STOP" -ge 3 ]; then
  echo "stage 3: train $CONF -> $RUN (re-run to resume)"
  voxsep train "$CONF" "run_dir=$RUN" "data.train.utterances=$CORPUS/manifest_8k.jsonl" \
    "data.valid.manifests=$MIX/manifest_cv.jsonl" "${EXTRA[@]}"
fi

if [ "$STAGE" -le 4 ] && [ "$STOP" -ge 4 ]; then
  echo "stage 4: evaluate $RUN/best.pt on the test mixtures -> $RUN/eval"
  voxsep evaluate --model "$RUN/best.pt" --data "$MIX" --split tt --out "$RUN/eval"
  voxsep evaluate --table "$RUN/eval/summary.json"     # the compact per-count table
fi
