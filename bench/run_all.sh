#!/usr/bin/env bash
# Every benchmark, one after the other; each prints its table and writes bench/results/*.json.
#   bash bench/run_all.sh     (about 10 minutes on 2 cores; PYTHON picks the interpreter)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
log="$(mktemp -t bgserve-bench-XXXXXX.log)"

run() {
    if ! "$python" "$@" 2>>"$log"; then
        echo "benchmark failed: $*; the end of $log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

bash "$here/setup.sh"
started=$(date +%s)
run "$here/perf.py"
echo
run "$here/compare.py"
echo
run "$here/shadow.py"
echo
echo "all benchmarks in $(( $(date +%s) - started ))s; results in $here/results/, logs in $log"
