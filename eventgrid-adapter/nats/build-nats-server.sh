#!/usr/bin/env bash
# Builds the NATS server (with JetStream) that the gateway's JetStream queue tests run against,
# from the pinned Go module. The binary lands in a cache directory outside the repository, keyed
# by version; an existing one is reused.
#
#   eventgrid-adapter/nats/build-nats-server.sh   # prints the binary's path on its last line
#
# ROUSE_NATS_CACHE overrides the cache root (default ~/.cache/rouse/nats).
set -euo pipefail

NATS_VERSION=v2.15.2

CACHE_ROOT=${ROUSE_NATS_CACHE:-$HOME/.cache/rouse/nats}
KEY="nats-server-${NATS_VERSION}"
BIN="$CACHE_ROOT/$KEY/bin"
WORK="$CACHE_ROOT/$KEY/src"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN=local

log() { echo "[build-nats-server] $*" >&2; }

# One build at a time per cache key (parallel tests and CI may race to build the same thing).
exec 9>"$CACHE_ROOT/$KEY.lock"
flock 9

if [[ ! -x "$BIN/nats-server" ]]; then
  command -v go >/dev/null || { log "Go is required to build nats-server"; exit 1; }
  # A wrapper module pins the server module (and, through its go.sum, its dependencies).
  mod="$WORK/mod"
  mkdir -p "$mod"
  cd "$mod"
  [[ -f go.mod ]] || go mod init rouse.invalid/natsbin >/dev/null 2>&1
  go get "github.com/nats-io/nats-server/v2@$NATS_VERSION" >/dev/null 2>&1 \
    || go get "github.com/nats-io/nats-server/v2@$NATS_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/nats-io/nats-server/v2"
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy
  start=$SECONDS
  log "building nats-server $NATS_VERSION ..."
  # Built to a temporary name and renamed, so a killed build never leaves a truncated binary
  # that a later run would take for a finished one.
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -f "[build-nats-server] nats-server: %e s wall, %M KiB peak RSS" \
      go build -trimpath -ldflags='-s -w' -o "$BIN/nats-server.partial" github.com/nats-io/nats-server/v2
  else
    go build -trimpath -ldflags='-s -w' -o "$BIN/nats-server.partial" github.com/nats-io/nats-server/v2
  fi
  mv "$BIN/nats-server.partial" "$BIN/nats-server"
  log "nats-server done in $((SECONDS - start)) s"
fi

[[ -x "$BIN/nats-server" ]] || { log "missing $BIN/nats-server"; exit 1; }
echo "$BIN/nats-server"
