#!/usr/bin/env bash
# The bytes a training step sends between nodes, measured on the simulated cluster's links
# (launch/cluster), against the traffic model of `lookahead train --dry-run`
# (dist/traffic_estimate.h) for the same configuration: the tiny model on 2 nodes x 2 ranks with
# dist.placement = full (frozen weights sharded over all 4 ranks: their gathers cross the link)
# and node (sharded within a node: only the trainables' collectives cross). Per step = the
# difference of a 4-step and a 2-step run (start-up, the final checkpoint and the export cancel),
# TCP payload = link bytes - packets x 66 B of Ethernet, IPv4 and TCP (timestamps) headers.
# OpenMPI is pinned to its ring algorithms (the model's assumption, NCCL's default) and the
# per-collective signature check (a 96-byte all-reduce, --verify-collectives) is off: the model
# counts the engine's collectives, not that control traffic. Must agree within 10 %.
# Usage: cluster_traffic_test.sh SOURCE_ROOT LOOKAHEAD
# Needs root (network and UTS namespaces): exits 77 (ctest: skipped) otherwise.
set -uo pipefail
ROOT=$1 BIN=$2
CLUSTER="$ROOT/launch/cluster"
NAME=ctraf
fail() { echo "FAIL: $*" >&2; "$CLUSTER" down --name "$NAME" >/dev/null 2>&1; exit 1; }
show() { echo "---- $1"; tail -"${2:-30}" "$1" | sed 's/^/    /'; }
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the simulated cluster needs root (network and UTS namespaces)"
  exit 77
fi
source "$ROOT/launch/mpi_env.sh"
T=$(mktemp -d)
trap '"$CLUSTER" down --name "$NAME" >/dev/null 2>&1; rm -rf "$T"' EXIT

timeout 60 "$BIN" data synth --out "$T/data.h5" --identities 8 --per-identity 4 --size 64 --latent-size 8 \
  --prompt-embeds 3x24 --pooled 16 --clip-features 5x12 >"$T/synth.log" 2>&1 || { show "$T/synth.log"; fail "data synth"; }
"$CLUSTER" up --name "$NAME" --nodes 2 --slots 2 >/dev/null || fail "cluster up"
ring=(--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allgather_algorithm 4
  --mca coll_tuned_reduce_scatter_algorithm 3)
counter() { cat "/sys/class/net/la$NAME-v$1/statistics/$2"; }  # the bridge side: its rx is what node $1 sent
sent() { echo "$(counter 0 rx_bytes) $(counter 0 rx_packets) $(counter 1 rx_bytes) $(counter 1 rx_packets)"; }

for placement in full node; do
  train=("$BIN" train --verify-collectives=false --config "$ROOT/launch/configs/tiny.ini" --data.train_set="$T/data.h5"
    --train.progress=false --train.checkpoint_every=1000 --dist.placement=$placement)
  timeout 120 "$CLUSTER" mpirun --name "$NAME" -- -np 4 "${train[@]}" --train.out="$T/dry" --dry-run \
    >"$T/dry.$placement" 2>&1 || { show "$T/dry.$placement"; fail "dry run ($placement)"; }
  for steps in 2 4; do
    before=$(sent)
    timeout 300 "$CLUSTER" mpirun --name "$NAME" -- -np 4 "${ring[@]}" "${train[@]}" --train.out="$T/run.$placement.$steps" \
      --train.steps=$steps >"$T/log.$placement.$steps" 2>&1 || { show "$T/log.$placement.$steps"; fail "$steps steps ($placement)"; }
    echo "$before $(sent)" >"$T/bytes.$placement.$steps"
  done
done

python3 - "$T" <<'PYEOF' || fail "measured and predicted traffic disagree"
import json, re, sys
t = sys.argv[1]
HEADERS = 14 + 20 + 32  # Ethernet, IPv4, TCP with timestamps: one set per packet the link counted
def predicted(placement):
    text = open(f"{t}/dry.{placement}").read()
    m = re.search(r"predicted bytes per step: (.*)", text)
    if not m: sys.exit(f"no 'predicted bytes per step' line in the {placement} dry run")
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
def payload(placement, steps):
    v = [int(x) for x in open(f"{t}/bytes.{placement}.{steps}").read().split()]
    b, a = v[:4], v[4:]
    return [(a[0] - b[0]) - HEADERS * (a[1] - b[1]), (a[2] - b[2]) - HEADERS * (a[3] - b[3])]
def metrics(placement, steps):
    return [json.loads(l) for l in open(f"{t}/run.{placement}.{steps}/metrics.jsonl") if l.strip()]
failed = []
inter = {}
print(f"{'placement':9} {'node':4} {'measured MiB/step':>17} {'predicted':>9} {'error':>7}")
for placement in ("full", "node"):
    p = predicted(placement)
    p2, p4 = payload(placement, 2), payload(placement, 4)
    per_step = [(p4[i] - p2[i]) / 2 for i in range(2)]
    for i, m in enumerate(per_step):
        err = m / p["comm_inter_node_sent_per_node"] - 1
        print(f"{placement:9} {i:4} {m / 2**20:17.3f} {p['comm_inter_node_sent_per_node'] / 2**20:9.3f} {100 * err:+6.1f}%")
        if abs(err) > 0.10:
            failed.append(f"{placement}, node {i}: {m:.0f} B/step sent to the other node, predicted "
                          f"{p['comm_inter_node_sent_per_node']:.0f} ({100 * err:+.1f} %)")
    inter[placement] = sum(per_step) / 2
    # The engine's own count of what it gathered and reduced agrees with the model's.
    for line in metrics(placement, 4):
        for key in ("comm_gathered_bytes", "comm_reduced_bytes"):
            if abs(line[key] / p[key] - 1) > 0.01:
                failed.append(f"{placement}, step {line['step']}: the engine counted {key} = {line[key]:.0f}, "
                              f"the model {p[key]:.0f}")
if inter["node"] * 10 > inter["full"]:
    failed.append(f"placement node sent {inter['node']:.0f} B/step between nodes, not a tenth of full's {inter['full']:.0f}")
print(f"node placement sends {inter['full'] / inter['node']:.0f}x less between nodes than full")
if failed:
    print("\n".join(failed)); sys.exit(1)
PYEOF
echo "PASS: inter-node bytes per step agree with the traffic model (full and node placement)"
