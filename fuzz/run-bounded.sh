#!/usr/bin/env bash
# Builds every cargo-fuzz target once, then runs each for $FUZZ_SECONDS (default 15) seconds,
# starting from the checked-in seeds in fuzz/seeds/<target>/ (copied into fuzz/corpus/<target>/,
# which libFuzzer grows and which git ignores).
# Exits non-zero on the first crash (the reproducer is left in fuzz/artifacts/<target>/).
# Needs the nightly toolchain and cargo-fuzz (installed here if missing). Without nightly it
# fails, unless FUZZ_OPTIONAL=1, in which case it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-15}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing (install: rustup toolchain install nightly)" >&2
    if [[ "${FUZZ_OPTIONAL:-0}" == 1 ]]; then
        echo "fuzz: FUZZ_OPTIONAL=1, skipping the fuzz run" >&2
        exit 0
    fi
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
started=$SECONDS
cargo +nightly fuzz build
echo "fuzz: built all targets in $((SECONDS - started))s"
targets=$(cargo +nightly fuzz list | tr "\n" " ")
for target in $targets; do
    mkdir -p "corpus/$target"
    if [[ -d "seeds/$target" ]]; then
        cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    fi
    echo "fuzz: $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
done
echo "fuzz: all targets ran ${seconds}s without a crash in $((SECONDS - started))s: $targets"
