#!/usr/bin/env bash
# Bounded simulator sweep for CI: fails if any run loses an acknowledged write or does not
# converge. Every failure prints its seed; replay one with
#   starling-sim <same flags> --seed S --seeds 1
# Budget: <= 3 minutes on a 2-core machine in the test profile (deps at opt-level 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
t0=$SECONDS

# Build as the workspace tests do (same profile and features), so after the tests this is a
# no-op; building the package alone would resolve features differently and rebuild deps.
cargo test --workspace --locked --no-run -q
sim="$target/debug/starling-sim"

echo "==> 200 seeds x 50 nodes: 5% loss, 1% duplication, partition 2-6 s, crashes, ack = peers:2"
"$sim" --nodes 50 --seed 1 --seeds 200 --loss 0.05 --duplicate 0.01 --crash-rate 0.005 \
  --partition-at 2000 --heal-at 6000 --ack-peers 2 --writes 20 --duration 10000 \
  --sync-interval-ms 2000 --membership on --check --json > "$target/sim-sweep.jsonl"
echo "    $(wc -l < "$target/sim-sweep.jsonl") runs ok"

# Membership is exercised by the sweep above; here the 1,000 nodes share one static view (the
# killed nodes stay in it), which keeps the run inside the CI budget and tests the
# retransmit/redelegation path around dead children.
echo "==> 1,000 nodes, 1% loss, 5 killed nodes, shared view"
"$sim" --nodes 1000 --seed 1 --loss 0.01 --kill 5 --membership off --check

echo "==> sim sweep done in $((SECONDS - t0)) s"
