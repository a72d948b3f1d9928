#!/usr/bin/env bash
# Builds the real Kubernetes control plane used by the tests from pinned Go modules:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok (plus kwok's stage
# files, which the test harness configures). Binaries land in a cache directory
# outside the repository, keyed by version; anything already built is skipped.
#
#   tests/cluster/build-control-plane.sh          # prints the bin directory on its last line
#
# ROUSE_K8S_CACHE overrides the cache root (default ~/.cache/rouse/k8s).
set -euo pipefail

K8S_VERSION=v1.36.3      # newest minor whose modules build with Go 1.26 (1.37 needs Go 1.27)
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

CACHE_ROOT=${ROUSE_K8S_CACHE:-$HOME/.cache/rouse/k8s}
# Bump when the apiserver patch below (or the version stamp) changes, so cached binaries are
# rebuilt.
PATCH_ID=loopback-endpoints-1_stamped-2
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_${PATCH_ID}"
BIN="$CACHE_ROOT/$KEY/bin"
WORK="$CACHE_ROOT/$KEY/src"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN=local

log() { echo "[build-control-plane] $*" >&2; }

# One build at a time per cache key (tests, `up` and CI may race to build the same thing).
exec 9>"$CACHE_ROOT/$KEY.lock"
flock 9

# A module's download info, asked outside any wrapper module: inside one, a module replaced by a
# directory (as k8s.io/kubernetes is, below) is not downloaded and prints nothing.
module_field() { (cd "$CACHE_ROOT" && go mod download -json "$1") | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

# Builds to a temporary name and renames, so a killed build never leaves a truncated binary that
# a later run would take for a finished one.
# Extra -ldflags (version stamps) may follow the package.
build_to() {
  local out=$1 pkg=$2; shift 2
  timed "$(basename "$out")" go build -trimpath -ldflags="-s -w $*" -o "$out.partial" "$pkg"
  mv "$out.partial" "$out"
}

# What Kubernetes' own release build (hack/lib/version.sh) stamps into every binary: without
# it the apiserver reports `v0.0.0-master+$Format:%H$` and `kubectl version` fails to parse it.
# The module proxy gives no commit hash (left empty); the build date is the release's commit
# time, which it does give; the tree is "dirty" because of the one-line patch below.
k8s_version_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local released flags=() pkg
  released=$(module_field "k8s.io/kubernetes@$K8S_VERSION" Info | xargs cat \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['Time'])")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=("-X $pkg.gitVersion=$K8S_VERSION" "-X $pkg.gitMajor=1" "-X $pkg.gitMinor=$minor"
            "-X $pkg.gitCommit=" "-X $pkg.gitTreeState=dirty" "-X $pkg.buildDate=$released")
  done
  echo "${flags[*]}"
}
timed() {
  local name=$1; shift
  local start=$SECONDS
  log "building $name ..."
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -f "[build-control-plane] $name: %e s wall, %M KiB peak RSS" "$@"
  else
    "$@"
  fi
  log "$name done in $((SECONDS - start)) s"
}

# --- kube-apiserver + kube-controller-manager -------------------------------------------------
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging paths,
# which do not apply to a dependent module. A wrapper module replaces each with its published tag;
# the list is generated from k8s.io/kubernetes's own go.mod, never hard-coded.
if [[ ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kube-controller-manager" || ! -x "$BIN/kube-scheduler" || ! -x "$BIN/kubectl" ]]; then
  mod="$WORK/kube"
  mkdir -p "$mod"
  cd "$mod"
  [[ -f go.mod ]] || go mod init rouse.invalid/kubebin >/dev/null 2>&1
  staging="v0.${K8S_VERSION#v1.}"
  gomod=$(module_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)
  replaces=()
  while read -r m; do
    replaces+=("-replace=$m=$m@$staging")
  done < <(awk '/^require|^\t/ {print}' "$gomod" | awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' | sort -u)
  log "replacing ${#replaces[@]} staging modules with $staging"
  go mod edit "${replaces[@]}"

  # The one deviation from upstream: test pods live on 127.0.0.0/8 (the only addresses tests may
  # use), and upstream validation rejects loopback addresses in Endpoints/EndpointSlices
  # ("may not be in the loopback range"). A copy of k8s.io/kubernetes with that single check
  # disabled is built instead of the pristine module; nothing else changes.
  patched="$WORK/kubernetes-$K8S_VERSION-$PATCH_ID"
  if [[ ! -f "$patched/.patched" ]]; then
    src=$(module_field "k8s.io/kubernetes@$K8S_VERSION" Dir)
    # A copy from the read-only module cache keeps its 0555 directories: make them removable.
    chmod -R u+w "$patched" 2>/dev/null || true
    rm -rf "$patched"
    cp -r "$src" "$patched"
    chmod -R u+w "$patched"
    target="$patched/pkg/apis/core/validation/validation.go"
    n=$(grep -c '	if ip.IsLoopback() {' "$target" || true)
    [[ "$n" == 1 ]] || { log "patch anchor not found exactly once in $target ($n)"; exit 1; }
    sed -i 's/^\tif ip.IsLoopback() {$/\tif false \&\& ip.IsLoopback() { \/\/ rouse test cluster: loopback endpoints allowed/' "$target"
    grep -q 'rouse test cluster: loopback endpoints allowed' "$target" || { log "patch failed"; exit 1; }
    touch "$patched/.patched"
  fi
  go mod edit "-replace=k8s.io/kubernetes=$patched"
  go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null 2>&1 || go get "k8s.io/kubernetes@$K8S_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy
  # kubectl of the same version: the tests render kustomize with it (`kubectl kustomize`)
  # rather than trusting whatever client the machine has.
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$BIN/$cmd" ]] || build_to "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd" "$(k8s_version_ldflags)"
  done
fi

# --- etcd ---------------------------------------------------------------------------------------
# Its own module, so its grpc/otel versions do not fight the apiserver's.
if [[ ! -x "$BIN/etcd" ]]; then
  mod="$WORK/etcd"
  mkdir -p "$mod"
  cd "$mod"
  [[ -f go.mod ]] || go mod init rouse.invalid/etcdbin >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy
  build_to "$BIN/etcd" go.etcd.io/etcd/server/v3
fi

# --- kwok ---------------------------------------------------------------------------------------
# Built in a wrapper module so one dependency can be patched: easycel v0.6.0 (kwok's CEL helper)
# fills two package-level caches without a lock, and kwok's node and pod controllers initialise
# their stages concurrently, so kwok sometimes died at start-up with "fatal error: concurrent map
# writes" (seen in CI). The copy adds one mutex around each cache; nothing else changes.
KWOK_PATCH_ID=easycel-cache-lock-1
if [[ ! -x "$BIN/kwok" || ! -f "$BIN/.kwok-$KWOK_PATCH_ID" ]]; then
  mod="$WORK/kwok"
  mkdir -p "$mod"
  cd "$mod"
  [[ -f go.mod ]] || go mod init rouse.invalid/kwokbin >/dev/null 2>&1
  go get "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null 2>&1 || go get "sigs.k8s.io/kwok@$KWOK_VERSION"
  easycel_version=$(go list -m -f '{{.Version}}' github.com/wzshiming/easycel)
  patched="$WORK/easycel-$easycel_version-$KWOK_PATCH_ID"
  if [[ ! -f "$patched/.patched" ]]; then
    src=$(module_field "github.com/wzshiming/easycel@$easycel_version" Dir)
    chmod -R u+w "$patched" 2>/dev/null || true
    rm -rf "$patched"
    cp -r "$src" "$patched"
    chmod -R u+w "$patched"
    cat > "$patched/rouse_cache_lock.go" <<'GO'
package easycel

import "sync"

// rouse test cluster: guards typeTraitMap and structFieldMap, which upstream fills unlocked.
var (
	typeTraitMu   sync.Mutex
	structFieldMu sync.Mutex
)
GO
    patch_fn() { # file, function signature line, mutex
      local n
      n=$(grep -cxF "$2" "$patched/$1" || true)
      [[ "$n" == 1 ]] || { log "patch anchor '$2' not found exactly once in $1 ($n)"; exit 1; }
      python3 - "$patched/$1" "$2" "$3" <<'PY'
import sys
path, sig, mu = sys.argv[1:]
text = open(path).read()
text = text.replace(sig + "\n", sig + "\n\t" + mu + ".Lock()\n\tdefer " + mu + ".Unlock()\n", 1)
open(path, "w").write(text)
PY
    }
    patch_fn types.go 'func getTrait(typ reflect.Type) int {' typeTraitMu
    patch_fn native_struct.go 'func getStructFieldMap(typ reflect.Type, tagName string) map[string]int {' structFieldMu
    touch "$patched/.patched"
  fi
  go mod edit "-replace=github.com/wzshiming/easycel=$patched"
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy
  build_to "$BIN/kwok" sigs.k8s.io/kwok/cmd/kwok
  touch "$BIN/.kwok-$KWOK_PATCH_ID"
fi

# kwok's own "fast" stages (node ready, pod ready, pod delete) from the module just built; the
# harness adds a start delay to pod-ready. Copied, not committed: they are kwok's files.
STAGES="$CACHE_ROOT/$KEY/stages"
if [[ ! -f "$STAGES/pod-ready.yaml" ]]; then
  kwok_dir=$(module_field "sigs.k8s.io/kwok@$KWOK_VERSION" Dir)
  mkdir -p "$STAGES"
  cp "$kwok_dir/kustomize/stage/node/fast/node-initialize.yaml" \
     "$kwok_dir/kustomize/stage/pod/fast/pod-ready.yaml" \
     "$kwok_dir/kustomize/stage/pod/fast/pod-delete.yaml" "$STAGES/"
  chmod u+w "$STAGES"/*.yaml
fi

for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
  [[ -x "$BIN/$b" ]] || { log "missing $BIN/$b"; exit 1; }
done
echo "$BIN"
