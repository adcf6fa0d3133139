#!/usr/bin/env bash
# launch/cluster: a simulated cluster of 2 nodes x 2 ranks on this machine.
#   - bad arguments and a cluster that is not up are refused (exit 2);
#   - `lookahead env` sees 2 nodes with 2 ranks each, local ranks 0 and 1 on each, two hostnames;
#   - the collective suite and the sharded engine's N-vs-1 equivalence (placements full, node,
#     replicate) pass on 4 ranks across the 2 nodes, and the nodes' links carried the traffic;
#   - a shaped link (tc) is in place and slows a transfer between nodes;
#   - `with` always tears down (also when its command fails); `up` and `down` are idempotent.
# Usage: cluster_test.sh SOURCE_ROOT LOOKAHEAD COLLECTIVES_TEST ENGINE_TEST
# Needs root (network and UTS namespaces): exits 77 (ctest: skipped) otherwise.
set -uo pipefail
ROOT=$1 LOOKAHEAD=$2 COLLECTIVES=$3 ENGINE=$4
CLUSTER="$ROOT/launch/cluster"
NAME=ctest  # not the default name, so a developer's own cluster is left alone
fail() { echo "FAIL: $*" >&2; "$CLUSTER" down --name "$NAME" >/dev/null 2>&1; exit 1; }
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the simulated cluster needs root (network and UTS namespaces)"
  exit 77
fi
source "$ROOT/launch/mpi_env.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

leftovers() {  # anything of cluster $NAME still on the machine
  { ip netns list | grep -E "^la$NAME-" ; ip -o link show | grep -E "la$NAME-"; ls -d "/run/lookahead-cluster/$NAME" 2>/dev/null; } || true
}

# --- bad input -----------------------------------------------------------------------------------
"$CLUSTER" up --name BAD >/dev/null 2>"$WORK/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--name must be" "$WORK/err" || fail "an upper-case --name was not refused with exit 2 (rc $rc)"
"$CLUSTER" up --name "$NAME" --rate fast >/dev/null 2>"$WORK/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--rate" "$WORK/err" || fail "--rate fast was not refused with exit 2 (rc $rc)"
"$CLUSTER" down --name "$NAME" >/dev/null || fail "down of a cluster that is not up failed"
"$CLUSTER" exec --name "$NAME" 0 -- true 2>"$WORK/err"; rc=$?
[ $rc -eq 2 ] && grep -q "is not up" "$WORK/err" || fail "exec on a cluster that is not up: rc $rc, $(cat "$WORK/err")"

# --- with: always down, also when the command fails ------------------------------------------------
"$CLUSTER" with --name "$NAME" -- false; rc=$?
[ $rc -eq 1 ] || fail "with -- false returned $rc, not the command's 1"
[ -z "$(leftovers)" ] || fail "with left behind: $(leftovers)"

# --- up twice is one cluster; everything below runs on it ------------------------------------------
"$CLUSTER" up --name "$NAME" --nodes 2 --slots 2 >/dev/null || fail "up"
"$CLUSTER" up --name "$NAME" --nodes 2 --slots 2 >"$WORK/up" || fail "second up"
[ "$(ip netns list | grep -c "^la$NAME-")" -eq 2 ] || fail "two ups did not leave exactly 2 namespaces"
[ "$("$CLUSTER" exec --name "$NAME" 1 -- hostname)" = "la$NAME-node1" ] || fail "node 1's hostname"
[ "$(hostname)" != "la$NAME-node0" ] || fail "the host's own hostname changed"
# A node reaches only the bridge: no default route.
routes=$("$CLUSTER" exec --name "$NAME" 0 -- ip route)
[[ "$routes" != *default* ]] || fail "node 0 has a default route: $routes"

MPIRUN=("$CLUSTER" mpirun --name "$NAME" --)

# lookahead env: 2 nodes, 2 ranks on each, local ranks 0/1, two hostnames.
timeout 120 "${MPIRUN[@]}" -np 4 "$LOOKAHEAD" env >"$WORK/env" 2>&1 || { cat "$WORK/env"; fail "lookahead env on the cluster"; }
grep -q "world    4 rank(s) on 2 node(s)" "$WORK/env" || { cat "$WORK/env"; fail "env does not see 4 ranks on 2 nodes"; }
for r in 0 1 2 3; do
  node=$((r / 2)) local=$((r % 2))
  grep -qE "rank $r/4  local $local/2  node $node/2  host la$NAME-node$node " "$WORK/env" ||
    { cat "$WORK/env"; fail "rank $r is not local $local on node $node (la$NAME-node$node)"; }
done

bytes() { cat "/sys/class/net/la$NAME-v$1/statistics/rx_bytes"; }  # what node $1 sent
sent0=$(bytes 0) sent1=$(bytes 1)

# The collective suite and the engine's equivalence test, 4 ranks over 2 nodes.
timeout 300 "${MPIRUN[@]}" -np 4 --tag-output "$COLLECTIVES" >"$WORK/coll" 2>&1 || { tail -40 "$WORK/coll"; fail "collective suite on 2 x 2"; }
[ "$(grep -c "PASSED.*tests\." "$WORK/coll")" -eq 4 ] || { tail -40 "$WORK/coll"; fail "not every rank passed the collective suite"; }
timeout 400 "${MPIRUN[@]}" -np 4 --tag-output "$ENGINE" >"$WORK/engine" 2>&1 || { tail -60 "$WORK/engine"; fail "engine equivalence on 2 x 2"; }
[ "$(grep -c "PASSED.*tests\." "$WORK/engine")" -eq 4 ] || { tail -40 "$WORK/engine"; fail "not every rank passed the engine test"; }
grep -q "FAILED" "$WORK/engine" && fail "the engine test reported a failure"
d0=$(($(bytes 0) - sent0)) d1=$(($(bytes 1) - sent1))
((d0 > 1000000 && d1 > 1000000)) || fail "the nodes' links carried too little (node 0 sent $d0 B, node 1 $d1 B)"
echo "inter-node traffic of the two suites: node 0 sent $d0 B, node 1 sent $d1 B"

# A shaped link (tc tbf): at 50 Mbit/s, 8 MiB from node 1 to node 0 needs at least 1.34 s.
xfer() {  # seconds for node 1 to send 8 MiB to node 0 over TCP
  "$CLUSTER" exec --name "$NAME" 0 -- python3 -c '
import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 47011)); s.listen(1)
c,_=s.accept(); n=0
while True:
    b=c.recv(1<<20)
    if not b: break
    n+=len(b)
print(n)' >"$WORK/recv" &
  local listener=$!
  sleep 0.5
  local addr0; addr0=$(awk '$1 == 0 {print $4}' "/run/lookahead-cluster/$NAME/nodes")
  local t0; t0=$(date +%s.%N)
  "$CLUSTER" exec --name "$NAME" 1 -- python3 -c "
import socket
s=socket.create_connection(('$addr0', 47011)); s.sendall(b'x' * (8 << 20)); s.close()"
  wait $listener
  local t1; t1=$(date +%s.%N)
  [ "$(cat "$WORK/recv")" = $((8 << 20)) ] || fail "the transfer arrived incomplete ($(cat "$WORK/recv") B)"
  echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
}
fast=$(xfer)
"$CLUSTER" shape --name "$NAME" --rate 50mbit || fail "shape"
status=$("$CLUSTER" status --name "$NAME")  # not piped into grep -q: pipefail would see SIGPIPE
[[ "$status" == *"rate=50mbit delay=none"* ]] || fail "status does not show the shaping: $status"
slow=$(xfer)
echo "8 MiB node 1 -> node 0: ${fast} s unshaped, ${slow} s at 50 Mbit/s (ideal 1.34 s)"
awk -v s="$slow" 'BEGIN { exit !(s >= 1.2) }' || fail "the shaped transfer took ${slow} s, less than 8 MiB at 50 Mbit/s allows"

"$CLUSTER" down --name "$NAME" >/dev/null || fail "down"
"$CLUSTER" down --name "$NAME" >/dev/null || fail "second down"
[ -z "$(leftovers)" ] || fail "down left behind: $(leftovers)"
echo "PASS: cluster of 2 x 2: env, collectives, engine equivalence, shaping, teardown"
