#!/usr/bin/env bash
# Builds the real `helm` (helm.sh/helm/v3/cmd/helm) that the chart tests run, from its pinned Go
# module. The binary lands in a cache directory outside the repository, keyed by version; an
# existing one is reused.
#
#   tests/cluster/build-helm.sh          # prints the binary's path on its last line
#
# ROUSE_HELM_CACHE overrides the cache root (default ~/.cache/rouse/helm).
set -euo pipefail

HELM_VERSION=v3.22.0

CACHE_ROOT=${ROUSE_HELM_CACHE:-$HOME/.cache/rouse/helm}
# Bump when the build flags below change, so a cached binary is rebuilt.
BUILD_ID=stamped-1
KEY="helm-${HELM_VERSION}_${BUILD_ID}"
BIN="$CACHE_ROOT/$KEY/bin"
WORK="$CACHE_ROOT/$KEY/src"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN=local

log() { echo "[build-helm] $*" >&2; }

# One build at a time per cache key (parallel tests and CI may race to build the same thing).
exec 9>"$CACHE_ROOT/$KEY.lock"
flock 9

if [[ ! -x "$BIN/helm" ]]; then
  command -v go >/dev/null || { log "Go is required to build helm"; exit 1; }
  # A module's download info, asked outside any module.
  module_field() { (cd "$CACHE_ROOT" && go mod download -json "$1") | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

  # The same link-time stamps as helm's own Makefile: its version (else `helm version` says
  # "v3.22") and the Kubernetes version `helm template`/`lint` assume without a cluster
  # (.Capabilities.KubeVersion), derived from the k8s.io/client-go version helm's go.mod pins
  # (v0.N.x -> 1.N), never hard-coded.
  gomod=$(module_field "helm.sh/helm/v3@$HELM_VERSION" GoMod)
  client_go=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")
  [[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || { log "no k8s.io/client-go version in $gomod ($client_go)"; exit 1; }
  k8s_minor=${BASH_REMATCH[1]}
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done

  start=$SECONDS
  log "building helm $HELM_VERSION (Kubernetes 1.$k8s_minor defaults) ..."
  # `go install pkg@version` builds with helm's own go.mod and go.sum (it has no replace
  # directives), so every dependency is the one helm's release pins. Installed into a scratch
  # directory and renamed, so a killed build never leaves a truncated binary that a later run
  # would take for a finished one.
  rm -rf "$WORK/gobin"
  mkdir -p "$WORK/gobin"
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -f "[build-helm] helm: %e s wall, %M KiB peak RSS" \
      env GOBIN="$WORK/gobin" CGO_ENABLED=0 go install -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  else
    env GOBIN="$WORK/gobin" CGO_ENABLED=0 go install -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  mv "$WORK/gobin/helm" "$BIN/helm.partial"
  mv "$BIN/helm.partial" "$BIN/helm"
  log "helm done in $((SECONDS - start)) s"
fi

[[ -x "$BIN/helm" ]] || { log "missing $BIN/helm"; exit 1; }
echo "$BIN/helm"
