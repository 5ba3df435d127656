#!/usr/bin/env bash
# WaveNet denoiser on the offline TTS corpus. Stages: 0 corpus, 1 train, 2 noisy test set + evaluate.
#   recipes/tts_enhancement/run.sh [--stage N] [--stop-stage N] [--corpus DIR] [--conf FILE] [--debug]
# Hyper-parameters live in conf.yaml only; this script passes paths.
set -euo pipefail
cd "$(dirname "$0")/../.."
stage=0; stop_stage=2; corpus=data/corpus; conf=recipes/tts_enhancement/conf.yaml; debug=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2;; --stop-stage) stop_stage=$2; shift 2;;
    --corpus) corpus=$2; shift 2;; --conf) conf=$2; shift 2;;
    --debug) debug=1; conf=recipes/tts_enhancement/conf_debug.yaml; shift;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
run_dir=$(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['run_dir'])" "$conf")
manifest="$corpus/manifest_8k.jsonl"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ ! -f "$manifest" ]; then
    echo "stage 0: building the TTS corpus in $corpus"
    voxsep corpus --out "$corpus"
  fi
fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: training ($conf -> $run_dir); re-running resumes"
  voxsep train "$conf" "data.manifest=$manifest"
fi
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  n=200; [ "$debug" = 1 ] && n=4
  testset="$run_dir/testset"
  echo "stage 2: $n noisy test utterances (test speakers, 0-10 dB) -> $testset; evaluating $run_dir/best.pt"
  if [ ! -f "$testset/pairs_tt.csv" ]; then
    voxsep mix --enhancement "$conf" --speech "$manifest" --out "$testset" --splits tt --n-mixtures "$n" \
      --snr 0:10 --max-seconds 6 --overwrite
  fi
  voxsep evaluate --task enhancement --model "$run_dir/best.pt" --data "$testset" --split tt --out "$run_dir/eval"
fi
