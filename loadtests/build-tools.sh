#!/usr/bin/env bash
# Builds the pinned load tool and the peer we compare against, outside the repository, in a cache
# keyed by version (anything already built is skipped):
#   - oha (crates.io), the HTTP load generator every scenario drives;
#   - the KEDA HTTP Add-on interceptor (Go module github.com/kedacore/http-add-on), plus its CRDs,
#     for the warm-path comparison on the real control plane.
# Prints `oha=<path>`, `interceptor=<path>` and `keda_crds=<dir>` lines for the runner.
#
# ROUSE_TOOLS_CACHE overrides the cache root (default ~/.cache/rouse/tools).
set -euo pipefail

OHA_VERSION=1.16.0
# v0.15.0 is the newest release the Go module proxy serves here (v0.16.0 is refused).
KEDA_HTTP_VERSION=v0.15.0

CACHE_ROOT=${ROUSE_TOOLS_CACHE:-$HOME/.cache/rouse/tools}
mkdir -p "$CACHE_ROOT"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN=local
log() { echo "[build-tools] $*" >&2; }

# One build at a time (CI, a developer and the runner may race to build the same thing).
exec 9>"$CACHE_ROOT/.lock"
flock 9

# --- oha ------------------------------------------------------------------------------------------
OHA_ROOT="$CACHE_ROOT/oha-$OHA_VERSION"
if [[ ! -x "$OHA_ROOT/bin/oha" ]]; then
  log "installing oha $OHA_VERSION ..."
  cargo install oha --version "=$OHA_VERSION" --locked --root "$OHA_ROOT.partial" --quiet
  rm -rf "$OHA_ROOT" && mv "$OHA_ROOT.partial" "$OHA_ROOT"
fi
echo "oha=$OHA_ROOT/bin/oha"

# --- KEDA HTTP Add-on interceptor -----------------------------------------------------------------
# The interceptor binds 0.0.0.0 (hard-coded); the build patches its three listeners to 127.0.0.1
# so a benchmark never listens beyond loopback. Bump the id when the patch changes.
KEDA_PATCH_ID=loopback-listen-1
KEDA_DIR="$CACHE_ROOT/keda-http-add-on-${KEDA_HTTP_VERSION}_$KEDA_PATCH_ID"
if [[ ! -x "$KEDA_DIR/bin/interceptor" ]]; then
  command -v go >/dev/null || { log "Go is required to build the KEDA interceptor"; exit 1; }
  src=$(cd "$CACHE_ROOT" && go mod download -json "github.com/kedacore/http-add-on@$KEDA_HTTP_VERSION" \
        | python3 -c "import json,sys; print(json.load(sys.stdin)['Dir'])")
  # The module cache is read-only; build in a private copy so go.sum updates stay local.
  rm -rf "$KEDA_DIR/src" && mkdir -p "$KEDA_DIR/bin" "$KEDA_DIR/crds"
  cp -r "$src" "$KEDA_DIR/src" && chmod -R u+w "$KEDA_DIR/src"
  main="$KEDA_DIR/src/interceptor/main.go"
  [[ $(grep -c '"0.0.0.0:%d"' "$main") == 3 ]] || { log "interceptor/main.go changed: listener patch no longer applies"; exit 1; }
  sed -i 's/"0.0.0.0:%d"/"127.0.0.1:%d"/' "$main"
  log "building the KEDA interceptor $KEDA_HTTP_VERSION ..."
  start=$SECONDS
  (cd "$KEDA_DIR/src" && go build -trimpath -ldflags='-s -w' -o "$KEDA_DIR/bin/interceptor.partial" ./interceptor)
  mv "$KEDA_DIR/bin/interceptor.partial" "$KEDA_DIR/bin/interceptor"
  cp "$KEDA_DIR/src"/config/crd/bases/*.yaml "$KEDA_DIR/crds/"
  rm -rf "$KEDA_DIR/src"
  log "interceptor built in $((SECONDS - start)) s"
fi
echo "interceptor=$KEDA_DIR/bin/interceptor"
echo "keda_crds=$KEDA_DIR/crds"
