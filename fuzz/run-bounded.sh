#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target for $FUZZ_SECONDS (default 15) seconds each.
# Exits non-zero on the first crash (the reproducer is left in fuzz/artifacts/<target>/).
# Needs the nightly toolchain and cargo-fuzz (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-15}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
targets=$(cargo +nightly fuzz list | tr "\n" " ")
for target in $targets; do
    mkdir -p "corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
echo "fuzz: all targets ran ${seconds}s without a crash: $targets"
