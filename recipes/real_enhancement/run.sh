#!/usr/bin/env bash
# WaveNet denoiser for real noisy speech (16 kHz), trained on real read speech + real noise recordings
# + generated noise, evaluated on held-back speakers/noise files and on real noisy recordings.
#
# Data (give local folders; see README.md for the public sources):
#   SPEECH: single-talker speech with a speaker per file, e.g. DATA/speech (manifest.csv: path,
#           speaker, corpus, ...; speechocean762 + LibriSpeech). The split rule of conf.yaml
#           (data.fractions) holds back 9 % of each corpus' speakers for validation.
#   NOISE:  ambient noise recordings, e.g. DATA/noise (a folder or a table with a path column); split
#           by file (data.noise_file_fractions: 8 files train, 3 validation).
#   REAL_PAIRS: optional evaluation-only noisy/clean pairs, e.g. the VoiceBank-DEMAND folder
#           path/to/vctk-enhance with noisy/ and clean/; never used for training or checkpoints.
#
# Stages: 1 fixed validation set (held-back speakers and noise files) -> 2 train -> 3 evaluate on the
# validation set (and on REAL_PAIRS if given), beside the baselines.
# Usage (from the repository root):
#   SPEECH=DATA/speech NOISE=DATA/noise REAL_PAIRS=path/to/vctk-enhance recipes/real_enhancement/run.sh
#   STAGE=2 STOP=2 SPEECH=DATA/speech NOISE=DATA/noise recipes/real_enhancement/run.sh trainer.max_time_minutes=60
#   CONF=recipes/real_enhancement/conf_debug.yaml DATA=data/real_enhancement_debug ... (seconds, end to end)
# Hyperparameters live in the YAML; this script passes only paths. Every stage resumes if re-run.
set -euo pipefail

SPEECH=${SPEECH:?set SPEECH to a folder or table of single-talker speech}
NOISE=${NOISE:?set NOISE to a folder or table of noise recordings}
REAL_PAIRS=${REAL_PAIRS:-}
CONF=${CONF:-recipes/real_enhancement/conf_tf.yaml}
STAGE=${STAGE:-1}
STOP=${STOP:-3}
DATA=${DATA:-data/real_enhancement}
RUN=${RUN:-runs/real_enhancement/run}
N_VALID=${N_VALID:-200}              # fixed validation pairs (whole utterances, cut to 8 s)
EXTRA=("$@")                         # more key=value overrides for `voxsep train` (stage 2)

if [ "$STAGE" -le 1 ] && [ "$STOP" -ge 1 ]; then
  echo "stage 1: $N_VALID fixed noisy/clean validation pairs (held-back speakers and noise files) -> $DATA/valid"
  if [ ! -f "$DATA/valid/pairs_cv.csv" ]; then
    voxsep mix --enhancement "$CONF" --speech "$SPEECH" --noise "$NOISE" --out "$DATA/valid" --splits cv \
      --n-mixtures "$N_VALID" --max-seconds 8 --seed 0 --overwrite
  fi
fi

if [ "$STAGE" -le 2 ] && [ "$STOP" -ge 2 ]; then
  echo "stage 2: train $CONF -> $RUN (re-run to resume)"
  voxsep train "$CONF" "run_dir=$RUN" "data.manifest=$SPEECH" "data.noise_files=$NOISE" "${EXTRA[@]}"
fi

if [ "$STAGE" -le 3 ] && [ "$STOP" -ge 3 ]; then
  echo "stage 3: evaluate $RUN/best.pt and the baselines on the validation pairs -> $RUN/eval_valid"
  voxsep evaluate --task enhancement --model "ours=$RUN/best.pt" --data "$DATA/valid" --split cv \
    --out "$RUN/eval_valid"
  if [ -n "$REAL_PAIRS" ]; then
    echo "stage 3: evaluate on the real noisy recordings $REAL_PAIRS (evaluation only) -> $RUN/eval_real"
    voxsep evaluate --task enhancement --model "ours=$RUN/best.pt" --data "$REAL_PAIRS" --out "$RUN/eval_real"
  fi
fi
