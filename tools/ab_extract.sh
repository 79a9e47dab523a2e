#!/bin/bash
# A/B timing of extract_video and rhythm: OLD and NEW checkouts alternate, ROUNDS rounds, on this checkout's
# data/raw (run `dvc repro ingest` first). Usage: tools/ab_extract.sh OLD_CHECKOUT NEW_CHECKOUT [N] [ROUNDS]
set -euo pipefail
old=$1 new=$2 n=${3:-120} rounds=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
for round in $(seq "$rounds"); do
  for side in old new; do
    root=$([ "$side" = old ] && echo "$old" || echo "$new")
    for what in video rhythm; do
      ext=$([ "$what" = video ] && echo npy || echo parquet)
      result=$(OMP_WAIT_POLICY=PASSIVE PYTHONPATH="$root" python "$here/tools/ab_extract.py" "$what" "$n" \
               "$out/${what}_${side}.$ext" "$here/data/raw" 2>/dev/null | tail -1)
      echo "$round $side load=$(cut -d' ' -f1 /proc/loadavg) $result"
    done
  done
done
echo "outputs in $out"
