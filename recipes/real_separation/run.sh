#!/usr/bin/env bash
# Count and separate 1-5 real talkers, trained on real read speech.
#
# Data (single-talker utterances + ambient noise; give local folders):
#   SPEECH: a folder or table of real speech with a speaker per file, e.g. DATA/speech (manifest.csv:
#           path, speaker, corpus, ...). The public sources: speechocean762 (Zhang et al., Interspeech
#           2021; github.com/jimbozhang/speechocean762, 250 speakers, Apache-2.0) and LibriSpeech
#           (Panayotov et al., ICASSP 2015; openslr.org/12, CC BY 4.0). With internet, download them
#           and point SPEECH at the folder (a LibriSpeech tree speaker/chapter/*.flac works as is).
#   TTS:    optional synthetic voices (`voxsep corpus --out DATA/corpus`): 30 % of the talkers.
#   NOISE:  a folder of noise recordings (e.g. DATA/noise, or DEMAND / WHAM! noise).
#   REAL_EVAL: optional evaluation-only recordings (a table with path, speaker_id, corpus, ...) to
#           mix into test mixtures; never used for training or checkpoint selection.
# Speakers are split by the project's rule (frontend.utterances): 9 % of each corpus' speakers are
# held back for validation (FRACTIONS); the validation mixtures pick checkpoints.
#
# Stages: 1 validation and calibration mixtures (and, with ADULT_CORPUS, a second validation set of that
# corpus' held-back speakers alone) -> 2 train the separator -> 3 train the counter ->
# 4 export one checkpoint (the two counters fused, fitted on the calibration mixtures) -> 5 evaluate on the validation set (and on REAL_EVAL mixtures if given).
# Usage (from the repository root):
#   SPEECH=DATA/speech TTS=DATA/corpus NOISE=DATA/noise REAL_EVAL=DATA/real_speech/manifest.csv recipes/real_separation/run.sh
#   STAGE=2 STOP=2 SPEECH=DATA/speech NOISE=DATA/noise recipes/real_separation/run.sh trainer.max_time_minutes=60
# Hyperparameters live in the YAML files; this script passes only paths. Every stage resumes if re-run.
set -euo pipefail

SPEECH=${SPEECH:?set SPEECH to a folder or table of single-talker speech}
NOISE=${NOISE:-}
TTS=${TTS:-}
INIT_COUNTER=${INIT_COUNTER:-}      # optional: start the counter from this checkpoint's counter
REAL_EVAL=${REAL_EVAL:-}
CONF=${CONF:-recipes/real_separation/conf.yaml}
CONF_COUNTER=${CONF_COUNTER:-recipes/real_separation/conf_counter.yaml}
STAGE=${STAGE:-1}
STOP=${STOP:-5}
DATA=${DATA:-data/real_separation}
RUN=${RUN:-runs/real_separation/run}
RUN_COUNTER=${RUN_COUNTER:-runs/real_counter/run}
MORE_COUNTERS=${MORE_COUNTERS:-}     # optional: more counter checkpoints (space-separated) fused in stage 4
FRACTIONS=${FRACTIONS:-0.91,0.09,0}
N_VALID=${N_VALID:-40}               # fixed validation mixtures per talker count
N_CALIB=${N_CALIB:-100}              # calibration mixtures per talker count (same held-back speakers, other seed)
N_EVAL=${N_EVAL:-30}                 # REAL_EVAL mixtures per talker count
ADULT_CORPUS=${ADULT_CORPUS:-}       # optional: a corpus of SPEECH's table (e.g. librispeech-train-clean-100)
                                     # whose held-back speakers alone make a second validation set
EXTRA=("$@")                         # more key=value overrides for `voxsep train` (stage 2)

if [ -n "$TTS" ]; then
  SOURCES="data.train.utterances=[{path: $SPEECH, weight: 0.7, fractions: [$FRACTIONS]}, {path: $TTS, weight: 0.3}]"
else
  SOURCES="data.train.utterances=[{path: $SPEECH, weight: 1.0, fractions: [$FRACTIONS]}]"
fi
NOISE_OPT="data.train.augment.noise.files=${NOISE:-null}"
VALID="data.valid.manifests=$DATA/mixtures/manifest_cv.jsonl"

if [ "$STAGE" -le 1 ] && [ "$STOP" -ge 1 ]; then
  echo "stage 1: fixed validation mixtures of 1-5 held-back talkers -> $DATA/mixtures (and $DATA/calib)"
  if [ ! -f "$DATA/mixtures/manifest_cv.jsonl" ]; then
    voxsep mix --speech "$SPEECH" --out "$DATA/mixtures" --speakers 1-5 --splits cv \
      --split-fractions "$FRACTIONS" --n-mixtures "$N_VALID" --sample-rate 8000 --mode min --gains wsj0 --seed 0
  fi
  if [ ! -f "$DATA/calib/manifest_cv.jsonl" ]; then
    voxsep mix --speech "$SPEECH" --out "$DATA/calib" --speakers 1-5 --splits cv \
      --split-fractions "$FRACTIONS" --n-mixtures "$N_CALIB" --sample-rate 8000 --mode min --gains wsj0 --seed 1
  fi
  if [ -n "$ADULT_CORPUS" ] && [ ! -f "$DATA/valid_adult/manifest_cv.jsonl" ]; then
    voxsep mix --speech "$SPEECH" --corpus "$ADULT_CORPUS" --out "$DATA/valid_adult" --speakers 1-5 --splits cv \
      --split-fractions "$FRACTIONS" --n-mixtures "$N_VALID" --sample-rate 8000 --mode min --gains wsj0 --seed 2
  fi
fi

if [ "$STAGE" -le 2 ] && [ "$STOP" -ge 2 ]; then
  echo "stage 2: train the separator $CONF -> $RUN (re-run to resume)"
  voxsep train "$CONF" "run_dir=$RUN" "$SOURCES" "$NOISE_OPT" "$VALID" "${EXTRA[@]}"
fi

if [ "$STAGE" -le 3 ] && [ "$STOP" -ge 3 ]; then
  echo "stage 3: train the counter $CONF_COUNTER -> $RUN_COUNTER (re-run to resume)"
  COUNTER_INIT="init_from=null"; [ -n "$INIT_COUNTER" ] && COUNTER_INIT="init_from=[counter=$INIT_COUNTER]"
  voxsep train "$CONF_COUNTER" "run_dir=$RUN_COUNTER" "$SOURCES" "$NOISE_OPT" "$VALID" "$COUNTER_INIT"
fi

if [ "$STAGE" -le 4 ] && [ "$STOP" -ge 4 ]; then
  echo "stage 4: export $RUN/best.pt with its count head fused with $RUN_COUNTER/best.pt $MORE_COUNTERS -> $RUN/model.pt"
  COUNTER_OPTS=(--counter "$RUN_COUNTER/best.pt")
  for c in $MORE_COUNTERS; do COUNTER_OPTS+=(--counter "$c"); done
  voxsep export "$RUN/model.pt" --model "$RUN/best.pt" "${COUNTER_OPTS[@]}" \
    --calibrate "$DATA/calib/manifest_cv.jsonl"
fi

if [ "$STAGE" -le 5 ] && [ "$STOP" -ge 5 ]; then
  echo "stage 5: evaluate $RUN/model.pt -> $RUN/eval_valid"
  voxsep evaluate --model "$RUN/model.pt" --data "$DATA/mixtures" --split cv --out "$RUN/eval_valid"
  if [ -n "$REAL_EVAL" ]; then
    # evaluation-only recordings: every speaker in the test split; noisy copies left out
    EVAL_TABLE="$DATA/real_eval/utterances.csv"
    if [ ! -f "$EVAL_TABLE" ]; then
      mkdir -p "$(dirname "$EVAL_TABLE")"
      ROOT=$(cd "$(dirname "$REAL_EVAL")" && pwd)
      awk -F, -v root="$ROOT" 'NR == 1 {print; next} $3 !~ /noisy/ {$1 = root "/" $1; print}' OFS=, \
        "$REAL_EVAL" > "$EVAL_TABLE"
    fi
    if [ ! -f "$DATA/real_eval/mixtures/manifest_tt.jsonl" ]; then
      voxsep mix --speech "$EVAL_TABLE" --out "$DATA/real_eval/mixtures" --speakers 1-5 --splits tt \
        --split-fractions 0,0,1 --n-mixtures "$N_EVAL" --sample-rate 8000 --mode min --gains wsj0 --seed 0
    fi
    voxsep evaluate --model "$RUN/model.pt" --data "$DATA/real_eval/mixtures" --split tt --out "$RUN/eval_real"
  fi
fi
