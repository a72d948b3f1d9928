#!/usr/bin/env bash
# Runs each fuzz target for $1 seconds (default 20). Uses the nightly toolchain if installed,
# otherwise stable with RUSTC_BOOTSTRAP=1 (libFuzzer's instrumentation flags are nightly-only).
# (ROUSE_FUZZ_TOOLCHAIN=stable forces the latter.)
# `--sanitizer none`: neither the gateway nor the head parser has unsafe code; the targets look for panics and broken
# invariants, and run ~5x faster without ASan.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
# cargo-fuzz, pinned, cached like loadtests/build-tools.sh caches oha (ROUSE_TOOLS_CACHE).
version=0.13.1
root="${ROUSE_TOOLS_CACHE:-$HOME/.cache/rouse/tools}/cargo-fuzz-$version"
if [[ ! -x "$root/bin/cargo-fuzz" ]]; then
  rm -rf "$root.partial"
  cargo install cargo-fuzz --version "=$version" --locked --root "$root.partial" --quiet
  rm -rf "$root" && mv "$root.partial" "$root"
fi
export PATH="$root/bin:$PATH"
if [[ "${ROUSE_FUZZ_TOOLCHAIN:-}" != stable ]] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
for t in eventgrid cloudevents http1_head; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${secs}s"
  "${fuzz[@]}" run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1
done
