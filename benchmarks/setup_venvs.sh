#!/usr/bin/env bash
# Create one venv per anchor under ${BENCH_VENVS:-/work/bench-venvs} (never lmscope's own .venv), each with
# the CPU torch wheel, lmscope (editable, from this checkout) and the anchor pinned in requirements-*.txt.
# Usage: bash benchmarks/setup_venvs.sh [ANCHOR...]   (default: all of tl nnsight neurox saelens sparsify pyvene)
# benchmarks/run_all runs every benchmark in the venv named here; a missing venv is reported and skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENVS="${BENCH_VENVS:-/work/bench-venvs}"
PY="${PYTHON:-python3.11}"
mkdir -p "$VENVS"
anchors=("$@")
[ ${#anchors[@]} -eq 0 ] && anchors=(tl nnsight neurox saelens sparsify pyvene)
for a in "${anchors[@]}"; do
  v="$VENVS/$a"
  echo "== $a -> $v"
  [ -x "$v/bin/python" ] || "$PY" -m venv "$v"
  pip=("$v/bin/pip" install -q)
  "${pip[@]}" torch==2.13.0                       # the CPU wheel first, so nothing pulls a CUDA build
  if [ "$a" = neurox ]; then                      # NeuroX 1.0.9 pins 2021 versions: no deps, then its needs
    "${pip[@]}" --no-deps neurox==1.0.9
  fi
  "${pip[@]}" -e "$ROOT[gguf]" -r "$ROOT/benchmarks/requirements-$a.txt" torch==2.13.0
  "$v/bin/pip" freeze > "$v/freeze.txt"
done
