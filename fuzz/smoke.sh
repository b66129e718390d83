#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 10) each, with the stable
# toolchain: cargo-fuzz's --sanitizer none mode needs no nightly compiler.
# Longer runs: see docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-10}
for target in $(cargo fuzz list); do
    echo "==> fuzz target $target for ${seconds}s"
    mkdir -p "corpus/$target"
    cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 |
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|INFO: Seed|.*(panicked|ERROR|SUMMARY))" || true
    # grep only trims the log; a crash makes cargo fuzz exit non-zero.
    test "${PIPESTATUS[0]}" -eq 0
done
