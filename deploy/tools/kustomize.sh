#!/usr/bin/env bash
# kustomize, pinned, built from source on first use and cached outside the repository.
#
# Usage: deploy/tools/kustomize.sh [kustomize arguments]   e.g. build deploy/k8s/overlays/prod
#        deploy/tools/kustomize.sh --path                  print the binary's path (installs it)
#
# The binary comes from the Go module proxy through `go install` (source verified against the
# Go checksum database), into $CLICKHOOK_CACHE_DIR/bin/kustomize-<version> (default
# ~/.cache/clickhook). The first run on a machine takes about a minute on 2 cores; later runs
# use the cached binary. Needs Go >= 1.26 (kustomize v5.8.2's go.mod). KUSTOMIZE=/path/to/kustomize
# uses that binary instead, installing nothing.
set -euo pipefail

KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.8.2}
CACHE_ROOT=${CLICKHOOK_CACHE_DIR:-${HOME:-/tmp}/.cache/clickhook}
BIN_DIR=$CACHE_ROOT/bin
TARGET=$BIN_DIR/kustomize-$KUSTOMIZE_VERSION

say() { echo "kustomize.sh: $*" >&2; }

install_kustomize() {
  command -v go >/dev/null 2>&1 \
    || { say "needs Go >= 1.26 to build kustomize $KUSTOMIZE_VERSION (or set KUSTOMIZE)"; exit 1; }
  mkdir -p "$BIN_DIR"
  # One build at a time (parallel test sessions on a cold cache).
  exec 9>"$BIN_DIR/.kustomize.lock"
  if command -v flock >/dev/null 2>&1; then flock -w 600 9 || { say "timed out on the lock"; exit 1; }; fi
  if [[ -x $TARGET ]]; then exec 9>&-; return; fi
  say "building kustomize $KUSTOMIZE_VERSION with go install into $BIN_DIR (once, about a minute)"
  local tmp
  tmp=$(mktemp -d "$BIN_DIR/gobin.XXXXXX")
  if ! GOBIN=$tmp GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
      go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" </dev/null >&2; then
    rm -rf -- "$tmp"
    say "go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION failed"
    exit 1
  fi
  mv -- "$tmp/kustomize" "$TARGET"
  rm -rf -- "$tmp"
  exec 9>&-
}

if [[ -n ${KUSTOMIZE:-} ]]; then
  bin=$KUSTOMIZE
else
  [[ -x $TARGET ]] || install_kustomize
  bin=$TARGET
fi

if [[ ${1:-} == --path ]]; then
  echo "$bin"
  exit 0
fi
exec "$bin" "$@"
