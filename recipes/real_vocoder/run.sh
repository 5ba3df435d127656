#!/usr/bin/env bash
# Mel-conditioned WaveNet vocoder on real read speech (16 kHz), speaker-independent: trained on the
# training speakers of SPEECH, evaluated on the held-back speakers against Griffin-Lim.
#
# Data: SPEECH, single-talker speech with a speaker per file, e.g. DATA/speech (manifest.csv: path,
# speaker, corpus, ...; speechocean762 + LibriSpeech, see README.md). The split rule of conf.yaml
# (data.fractions) holds back 9 % of each corpus' speakers; evaluation reads the split from the checkpoint.
#
# Stages: 1 train -> 2 evaluate on held-back speakers (log-mel distance, MCD, PESQ, STOI vs Griffin-Lim).
# The learning curve: RUN/history.jsonl (validation loss and CPU seconds per epoch).
# Usage (from the repository root):
#   SPEECH=DATA/speech recipes/real_vocoder/run.sh
#   STAGE=1 STOP=1 SPEECH=DATA/speech recipes/real_vocoder/run.sh trainer.max_time_minutes=60
# Hyperparameters live in the YAML; this script passes only paths. Every stage resumes if re-run.
set -euo pipefail

SPEECH=${SPEECH:?set SPEECH to a folder or table of single-talker speech}
CONF=${CONF:-recipes/real_vocoder/conf.yaml}
STAGE=${STAGE:-1}
STOP=${STOP:-2}
RUN=${RUN:-runs/real_vocoder/run}
N_EVAL=${N_EVAL:-20}                 # held-back utterances (cut to 3 s) vocoded for the table
EXTRA=("$@")                         # more key=value overrides for `voxsep train` (stage 1)

if [ "$STAGE" -le 1 ] && [ "$STOP" -ge 1 ]; then
  echo "stage 1: train $CONF -> $RUN (re-run to resume)"
  voxsep train "$CONF" "run_dir=$RUN" "data.manifest=$SPEECH" "${EXTRA[@]}"
fi

if [ "$STAGE" -le 2 ] && [ "$STOP" -ge 2 ]; then
  echo "stage 2: vocode $N_EVAL utterances of held-back speakers with $RUN/best.pt and Griffin-Lim -> $RUN/eval"
  voxsep evaluate --task vocoder --model "$RUN/best.pt" --data "$SPEECH" --split valid \
    --max-items "$N_EVAL" --max-seconds 3 --out "$RUN/eval"
fi
