#!/usr/bin/env bash
# Build the offline multi-voice TTS corpus. One stage: corpus (re-running resumes).
#   recipes/tts_corpus/run.sh [--conf FILE] [--out DIR] [--debug] [--dry-run]
# Settings live in conf.yaml only; this script turns them into `voxsep corpus` flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
conf=recipes/tts_corpus/conf.yaml; out=""; dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --conf) conf=$2; shift 2;;
    --out) out=$2; shift 2;;
    --debug) conf=recipes/tts_corpus/conf_debug.yaml; shift;;
    --dry-run) dry_run=1; shift;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
mapfile -t args < <(python - "$conf" "$out" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
print("--out"); print(sys.argv[2] or c["out"])
for key in ("identities", "utterances_per_identity", "seed", "workers"):
    print("--" + key.replace("_", "-")); print(c[key])
print("--rates"); print(",".join(str(r) for r in c["rates"]))
if c.get("sentences"):
    print("--sentences"); print(c["sentences"])
PY
)
if [ "$dry_run" = 1 ]; then echo voxsep corpus "${args[@]}"; exit 0; fi
echo "stage 0: building the TTS corpus ($conf)"
voxsep corpus "${args[@]}"
