#!/usr/bin/env bash
# Train the real-speech separator for a fixed wall time, then write its checkpoint and figures.
# On a machine with a CUDA GPU it runs conf_gpu.yaml (one GPU, batch 32 x 4 s, mixed precision);
# elsewhere the CPU config conf.yaml with one thread. It starts from INIT (default: the bundled model,
# so it continues the campaign; INIT=none starts from scratch), makes the validation mixtures if they are missing, and evaluates
# the result (with INIT's counter, fused and calibrated) on them. Outputs: $RUN/best.pt, $RUN/model.pt (separator + counter),
# $RUN/history.jsonl, $RUN/eval_valid/summary.json.
#
# Usage (repository root):
#   SPEECH=DATA/speech NOISE=DATA/noise MINUTES=10 recipes/real_separation/train_fixed_time.sh
# Through the device tool (a copy of the working tree; carry the 8 kHz data made by stage 0 of
# this script, PREPARE=1, so that the copy stays under the tool's size limit):
#   PREPARE=1 SPEECH=DATA/speech NOISE=DATA/noise recipes/real_separation/train_fixed_time.sh  # here
#   run(command="SPEECH=data/real_separation/carry/speech NOISE=data/real_separation/carry/noise \
#       recipes/real_separation/train_fixed_time.sh", carry=["data/real_separation/carry"])
set -euo pipefail

SPEECH=${SPEECH:?set SPEECH to the training speech folder or table}
NOISE=${NOISE:-}
MINUTES=${MINUTES:-10}
INIT=${INIT:-default}
DATA=${DATA:-data/real_separation}
RUN=${RUN:-runs/real_separation/fixed_time_$(date +%Y%m%d_%H%M%S)}
FRACTIONS=${FRACTIONS:-0.91,0.09,0}
N_VALID=${N_VALID:-40}               # validation mixtures per talker count (the campaign's: 40)
N_CALIB=${N_CALIB:-100}              # calibration mixtures per talker count (the campaign's: 100)
LAYERS=${LAYERS:-}                   # BLSTM layers (default: INIT's; one more grows the trunk)
HIDDEN=${HIDDEN:-}                   # BLSTM units per direction (default: INIT's; more widens the trunk)
MASK=${MASK:-}                       # mask (default: INIT's; sigmoid+phase grows phase rows from a sigmoid INIT)
HOP=${HOP:-}                         # STFT hop in samples (default: INIT's; the weights do not depend on it)

if [ "${PREPARE:-0}" = 1 ]; then
  # stage 0: an 8 kHz copy of the speech and noise (FLAC, same table) small enough to carry
  OUT=$DATA/carry
  mkdir -p "$OUT/speech" "$OUT/noise"
  TABLE=$SPEECH; [ -d "$SPEECH" ] && TABLE=$SPEECH/manifest.csv
  ROOT=$(dirname "$TABLE")
  tail -n +2 "$TABLE" | cut -d, -f1 | while read -r rel; do
    mkdir -p "$OUT/speech/$(dirname "$rel")"
    [ -f "$OUT/speech/$rel" ] || sox "$ROOT/$rel" -r 8000 "$OUT/speech/$rel"
  done
  cp "$TABLE" "$OUT/speech/manifest.csv"
  if [ -n "$NOISE" ]; then
    for f in "$NOISE"/*.flac; do [ -f "$OUT/noise/$(basename "$f")" ] || sox "$f" -r 8000 "$OUT/noise/$(basename "$f")"; done
    [ -f "$NOISE/manifest.csv" ] && cp "$NOISE/manifest.csv" "$OUT/noise/"
  fi
  du -sh "$OUT"
  exit 0
fi

if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  CONF=recipes/real_separation/conf_gpu.yaml; DEVICE=gpu
else
  CONF=recipes/real_separation/conf.yaml; DEVICE=cpu; export OMP_NUM_THREADS=1
fi
echo "device: $DEVICE, config: $CONF, $MINUTES minutes, from $INIT -> $RUN"

if [ ! -f "$DATA/mixtures/manifest_cv.jsonl" ]; then
  voxsep mix --speech "$SPEECH" --out "$DATA/mixtures" --speakers 1-5 --splits cv \
    --split-fractions "$FRACTIONS" --n-mixtures "$N_VALID" --sample-rate 8000 --mode min --gains wsj0 --seed 0
fi
if [ ! -f "$DATA/calib/manifest_cv.jsonl" ]; then  # the count fusion's calibration mixtures (other seed)
  voxsep mix --speech "$SPEECH" --out "$DATA/calib" --speakers 1-5 --splits cv \
    --split-fractions "$FRACTIONS" --n-mixtures "$N_CALIB" --sample-rate 8000 --mode min --gains wsj0 --seed 1
fi
if [ "$INIT" = default ]; then
  INIT=$(python -c "from voxsep.registry import list_models; print([m.path for m in list_models('separation') if m.name == 'default'][0])")
fi
# the separator's trunk, heads and trunk count head come from INIT (its depth and width, so that
# no layer is left behind; LAYERS above INIT's grows new layers that start nearly silent, HIDDEN above
# INIT's widens every layer with new units that start unread: the same function either way). The export
# below fuses the count head with INIT's counters that do not read INIT's trunk (the CRNNs), fitted
# on the calibration mixtures
INIT_OPT="init_from=null"; SHAPE=()
if [ "$INIT" != none ]; then
  # INIT's input features, mask, hop and per-count head blocks (head_rnn) are kept too
  read -r INIT_LAYERS INIT_HIDDEN INIT_FEATURES INIT_HEAD_RNN INIT_MASK INIT_HOP < <(python -c "from engine.checkpoint import load_checkpoint; \
c = load_checkpoint('$INIT')['model_config']; t = c['trunk']; e = c['encoder']; \
print(t['n_layers'], t['hidden_size'], e.get('features', 'log1p'), c.get('head_rnn', 0), e.get('mask', 'sigmoid'), e.get('hop_length', 64))")
  BLOCKS=""; [ "$INIT_HEAD_RNN" = 0 ] || BLOCKS=" head_blocks=$INIT,"
  INIT_OPT="init_from=[trunk=$INIT, heads=$INIT,$BLOCKS counter=$INIT]"
  SHAPE=("model.config.trunk.n_layers=${LAYERS:-$INIT_LAYERS}" "model.config.trunk.hidden_size=${HIDDEN:-$INIT_HIDDEN}"
         "model.config.encoder.features=$INIT_FEATURES" "model.config.head_rnn=$INIT_HEAD_RNN"
         "model.config.encoder.mask=${MASK:-$INIT_MASK}" "model.config.encoder.hop_length=${HOP:-$INIT_HOP}")
else
  [ -z "$LAYERS" ] || SHAPE+=("model.config.trunk.n_layers=$LAYERS")
  [ -z "$HIDDEN" ] || SHAPE+=("model.config.trunk.hidden_size=$HIDDEN")
  [ -z "$MASK" ] || SHAPE+=("model.config.encoder.mask=$MASK")
  [ -z "$HOP" ] || SHAPE+=("model.config.encoder.hop_length=$HOP")
fi
voxsep train "$CONF" "run_dir=$RUN" "$INIT_OPT" "${SHAPE[@]}" \
  "data.train.utterances=[{path: $SPEECH, weight: 1.0, fractions: [$FRACTIONS]}]" \
  "data.train.augment.noise.files=${NOISE:-null}" "data.valid.manifests=$DATA/mixtures/manifest_cv.jsonl" \
  "trainer.max_time_minutes=$MINUTES"
MODEL=$RUN/best.pt
if [ "$INIT" != none ]; then
  voxsep export "$RUN/model.pt" --model "$RUN/best.pt" --counter "$INIT" --calibrate "$DATA/calib/manifest_cv.jsonl"
  MODEL=$RUN/model.pt
fi
voxsep evaluate --model "$MODEL" --data "$DATA/mixtures" --split cv --no-bss --no-pesq --no-stoi --out "$RUN/eval_valid"
echo "checkpoint: $MODEL; figures: $RUN/eval_valid/summary.json"
