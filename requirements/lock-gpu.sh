#!/usr/bin/env bash
# The GPU locks: requirements/{eval,train}-gpu.in -> requirements/{eval,train}-gpu.txt, resolved
# with uv for a Linux x86-64 machine with the CUDA wheels PyPI serves. Runs on any machine, GPU or
# not; it installs nothing but uv itself.
#
#   bash requirements/lock-gpu.sh          (make lock-gpu)     rewrite both locks
#   bash requirements/lock-gpu.sh --check  (make check-locks)  re-resolve each .in into a temp
#                                           file, diff it against the committed lock, exit 1 if not equal
#
# Each lock records the upload cut-off (uv's --exclude-newer) it was resolved with, so resolving
# again gives the same file whatever has been released since. `make lock-gpu` keeps each lock's
# cut-off (picks up edits to the .in files only); `make lock-gpu LOCK_DATE=2027-01-31T00:00:00Z`
# moves both forward (newer releases).
#
# Everything it writes apart from the locks lies in .venv-tools/ (uv, uv's cache, temp files),
# which git ignores: no cache in the home folder, no standard input read.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
PY_VERSION=3.11                  # CPython of both environments (as on the CPU machines)
PLATFORM=x86_64-manylinux_2_31   # glibc >= 2.31: vllm's llguidance has no manylinux_2_28 wheel
LOCKS=(eval-gpu train-gpu)
TOOLS=.venv-tools
PYTHON=${PYTHON:-python3}

mode=lock
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# Only the flags below decide the resolution: drop any UV_* setting (another index, constraints,
# a cut-off) from the caller's environment, and read no uv.toml / pyproject settings (--no-config).
for var in $(compgen -e | grep '^UV_' || true); do unset "$var"; done
export UV_CACHE_DIR="$PWD/$TOOLS/uv-cache"
mkdir -p "$TOOLS/tmp"
export TMPDIR="$PWD/$TOOLS/tmp"  # pip's and uv's build locks and scratch files, too

uv="$TOOLS/bin/uv"
if [[ "$("$uv" --version 2>/dev/null)" != "uv $UV_VERSION"* ]]; then
  echo "[lock-gpu] installing uv $UV_VERSION into $TOOLS/"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --no-cache-dir --disable-pip-version-check "uv==$UV_VERSION"
fi

lock_date() {  # the cut-off recorded in a lock's header, or nothing
  [[ -f "$1" ]] && sed -n 's/^#.* --exclude-newer \([^ ]*\).*/\1/p' "$1" | head -n 1 || true
}

resolve() {  # resolve NAME CUTOFF OUT: write the lock of requirements/NAME.in to OUT
  local name=$1 cutoff=$2 out=$3 body="$TOOLS/tmp/$1.body"
  local cmd=(uv pip compile "requirements/$name.in" --no-header --python-version "$PY_VERSION"
             --python-platform "$PLATFORM" --exclude-newer "$cutoff" --generate-hashes)
  rm -f "$body"  # an existing output file would be read as preferences: resolve from nothing
  "$uv" "${cmd[@]:1}" --no-config --no-python-downloads --python "$PYTHON" --quiet -o "$body" \
    < /dev/null || return 1
  {
    echo "# Lock of requirements/$name.in for \`make setup-gpu\`: Linux x86-64 (glibc 2.31 or newer),"
    echo "# CPython $PY_VERSION, the CUDA wheels PyPI serves. Resolved on a machine without a GPU; these"
    echo "# versions were never installed or run on a GPU here. Install: pip install --no-deps -r (hashes)."
    echo "# Regenerate: make lock-gpu (requirements/lock-gpu.sh, uv $UV_VERSION). The lines below are what"
    echo "#    ${cmd[*]}"
    echo "# prints; make check-locks runs it again and compares."
    cat "$body"
  } > "$out"
}

if [[ $mode == lock ]]; then
  for name in "${LOCKS[@]}"; do
    lock="requirements/$name.txt"
    cutoff=${LOCK_DATE:-$(lock_date "$lock")}
    if [[ -z $cutoff ]]; then
      echo "[lock-gpu] $lock records no cut-off: give one, e.g. make lock-gpu LOCK_DATE=$(date -u +%Y-%m-%dT00:00:00Z)" >&2
      exit 2
    fi
    resolve "$name" "$cutoff" "$TOOLS/tmp/$name.txt"
    mv "$TOOLS/tmp/$name.txt" "$lock"
    echo "[lock-gpu] wrote $lock ($(grep -c '^[a-z0-9]' "$lock") packages, uploads up to $cutoff)"
  done
  exit 0
fi

fail=0
for name in "${LOCKS[@]}"; do
  lock="requirements/$name.txt" new="$TOOLS/tmp/$name.txt"
  cutoff=$(lock_date "$lock")
  if [[ -z $cutoff ]]; then
    echo "check-locks: FAIL: $lock is missing or records no --exclude-newer cut-off; run make lock-gpu LOCK_DATE=..." >&2
    fail=1; continue
  fi
  if ! resolve "$name" "$cutoff" "$new"; then
    echo "check-locks: FAIL: requirements/$name.in no longer resolves (uv's error above); $lock is stale" >&2
    fail=1; continue
  fi
  if diff -u "$lock" "$new" > "$TOOLS/tmp/$name.diff"; then
    echo "check-locks: $lock matches requirements/$name.in"
  else
    echo "check-locks: FAIL: $lock does not match requirements/$name.in: resolved again with the same" >&2
    echo "  settings it differs ($(grep -c '^[-+][^-+]' "$TOOLS/tmp/$name.diff") lines). Run 'make lock-gpu' and commit $lock. First lines of the diff:" >&2
    head -n 30 "$TOOLS/tmp/$name.diff" >&2
    fail=1
  fi
done
exit $fail
