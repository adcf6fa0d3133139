#!/usr/bin/env bash
# The `lookahead` command line: help, version, env across ranks, and bad input ending with a clear
# message and the documented exit code (2 usage, 3 distributed failure) instead of a hang.
# Usage: cli_test.sh MPIEXEC LOOKAHEAD
set -uo pipefail
MPIEXEC=$1 BIN=$2
out=$(mktemp)
CHECK_TIMEOUT=60
source "$(dirname "${BASH_SOURCE[0]}")/../check.sh"
check help 0 "Commands:" -- "$BIN" --help
check help-lists-env 0 "env +print ranks" -- "$BIN" help
check version 0 "^lookahead [0-9]+\.[0-9]+\.[0-9]+ \(torch " -- "$BIN" version
check no-command 2 "Usage: lookahead" -- "$BIN"
check unknown-command 2 "unknown command 'trian'" -- "$BIN" trian
check env-single 0 "world +1 rank\(s\) on 1 node\(s\)" -- "$BIN" env
check env-np3 0 "rank 2/3 +local 2/3 +node 0/1" -- "$MPIEXEC" -np 3 --oversubscribe "$BIN" env
check env-versions 0 "HDF5 +1\.[0-9]+" -- "$MPIEXEC" -np 2 --oversubscribe "$BIN" env
check bad-timeout 2 "--timeout must be >= 0" -- "$BIN" env --timeout -1
check bad-number 2 "timeout" -- "$BIN" env --timeout soon
check stray-flag 2 "unrecognised option '--bogus'|unrecognized option '--bogus'" -- "$BIN" env --bogus
# Ranks started with different command lines refuse to start, naming the rank that differs.
check diverged-ranks 3 "rank 1: [0-9a-f]{16} +<-- differs from rank 0" -- \
  "$MPIEXEC" --oversubscribe -np 1 "$BIN" env --timeout 30 : -np 1 "$BIN" env --timeout 31
rm -f "$out"
check_summary
