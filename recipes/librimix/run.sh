#!/usr/bin/env bash
# LibriMix (Libri2Mix..Libri5Mix): 1 data check (or LibriMix-style CSVs from the TTS corpus) -> 2 train -> 3 evaluate.
# Usage (from the repository root):
#   TRAIN_CSVS="/d/Libri2Mix/wav8k/min/metadata/mixture_train-360_mix_clean.csv,/d/Libri3Mix/..." \
#   VALID_CSVS="/d/Libri2Mix/wav8k/min/metadata/mixture_dev_mix_clean.csv,..." \
#   TEST_CSVS="/d/Libri2Mix/wav8k/min/metadata/mixture_test_mix_clean.csv,..." recipes/librimix/run.sh
#   CORPUS=data/corpus LIBRIMIX=data/librimix_tts recipes/librimix/run.sh   # CSVs from TTS speech
# Hyperparameters live in the YAML; this script passes only paths.
set -euo pipefail

CONF=${CONF:-recipes/librimix/conf.yaml}
STAGE=${STAGE:-1}
STOP=${STOP:-3}
LIBRIMIX=${LIBRIMIX:-data/librimix}
CORPUS=${CORPUS:-}
RUN=${RUN:-runs/$(basename "$CONF" .yaml | sed 's/^conf/librimix/')}
csvs() { ls "$LIBRIMIX"/metadata/mixture_"$1"_*spk.csv | paste -sd, -; }
EXTRA=("$@")

if [ "$STAGE" -le 1 ] && [ "$STOP" -ge 1 ] && [ -z "${TRAIN_CSVS:-}" ]; then
  if [ ! -d "$LIBRIMIX/metadata" ]; then
    if [ -z "$CORPUS" ]; then
      echo "set TRAIN_CSVS/VALID_CSVS/TEST_CSVS, or CORPUS to build LibriMix-style data at $LIBRIMIX" >&2
      exit 2
    fi
    echo "stage 1: LibriMix-style mixtures (LUFS gains) from $CORPUS -> $LIBRIMIX"
    voxsep mix --speech "$CORPUS/manifest_8k.jsonl" --out "$LIBRIMIX" --speakers 2-5 \
      --n-mixtures tr=20000,cv=3000,tt=3000 --sample-rate 8000 --mode min --gains librimix
  fi
fi
TRAIN_CSVS=${TRAIN_CSVS:-$(csvs tr)}
VALID_CSVS=${VALID_CSVS:-$(csvs cv)}
TEST_CSVS=${TEST_CSVS:-$(csvs tt)}

if [ "$STAGE" -le 2 ] && [ "$STOP" -ge 2 ]; then
  echo "stage 2: train $CONF -> $RUN"
  voxsep train "$CONF" "run_dir=$RUN" "data.train.csv_paths=[$TRAIN_CSVS]" "data.valid.csv_paths=[$VALID_CSVS]" \
    "${EXTRA[@]}"
fi

if [ "$STAGE" -le 3 ] && [ "$STOP" -ge 3 ]; then
  echo "stage 3: evaluate -> $RUN/eval"
  for csv in ${TEST_CSVS//,/ }; do
    voxsep evaluate --model "$RUN/best.pt" --data "$csv" --out "$RUN/eval/$(basename "$csv" .csv)"
  done
fi
