#!/usr/bin/env bash
# Template: `lookahead train` across nodes with OpenMPI's mpirun. Copy it next to your run, edit the
# defaults below (or set the variables in the environment), and start it on a node that can ssh to
# every host of the hostfile without a password. Extra arguments go to `lookahead train`, e.g.
#   HOSTFILE=hosts OUT=/shared/runs/ffhq-1 ./train-mpirun.sh --train.steps=5001
#
#   HOSTFILE   one line per node, "<host> slots=<ranks on it>" (one rank per GPU)   [./hostfile]
#   CONFIG     the run's INI                                  [launch/configs/sdxl-lookahead.ini]
#   OUT        train.out: on a filesystem every node sees (checkpoints, metrics, export)  [out/run]
#   LOOKAHEAD  the executable, at the same path on every node         [build/launch/lookahead]
#   IFACE      network interface between the nodes, for MPI's TCP and NCCL's bootstrap [unset: auto]
#   NCCL_IB_HCA / NCCL_* and OMP_NUM_THREADS in the environment are passed on to every rank.
#
# Ranks fill each host's slots in hostfile order, so consecutive ranks share a node (what
# dist.placement = node and the World's local ranks expect). A stop (Ctrl-C, SIGTERM to this script,
# SIGUSR1 for a checkpoint-and-exit) reaches the ranks as described in docs/training.md; restart the
# same command with --train.resume=latest to continue.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOSTFILE=${HOSTFILE:-./hostfile}
CONFIG=${CONFIG:-$ROOT/launch/configs/sdxl-lookahead.ini}
OUT=${OUT:-out/run}
LOOKAHEAD=${LOOKAHEAD:-$ROOT/build/launch/lookahead}
IFACE=${IFACE:-}

[ -r "$HOSTFILE" ] || { echo "train-mpirun: no hostfile '$HOSTFILE' (set HOSTFILE)" >&2; exit 2; }
[ -x "$LOOKAHEAD" ] || { echo "train-mpirun: no executable '$LOOKAHEAD' (set LOOKAHEAD)" >&2; exit 2; }
# Ranks = the hostfile's slots (a host line without slots= counts as one).
NP=$(awk '!/^[[:space:]]*(#|$)/ { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { sub(/^slots=/, "", $i); n = $i }; s += n }
          END { print s + 0 }' "$HOSTFILE")
[ "$NP" -gt 0 ] || { echo "train-mpirun: '$HOSTFILE' names no host" >&2; exit 2; }

source "$ROOT/launch/mpi_env.sh"
args=(-np "$NP" --hostfile "$HOSTFILE" --map-by slot --bind-to none --tag-output)
if [ -n "$IFACE" ]; then
  args+=(--mca btl_tcp_if_include "$IFACE" --mca oob_tcp_if_include "$IFACE" -x NCCL_SOCKET_IFNAME="$IFACE")
fi
# Pass the environment a rank needs on the other nodes (mpirun exports nothing by default).
for var in PATH LD_LIBRARY_PATH OMP_NUM_THREADS CUDA_VISIBLE_DEVICES $(compgen -e | grep '^NCCL_' || true); do
  [ -n "${!var:-}" ] && args+=(-x "$var")
done
echo "train-mpirun: $NP ranks from $HOSTFILE, config $CONFIG, out $OUT"
exec mpirun "${args[@]}" "$LOOKAHEAD" train --config "$CONFIG" --train.out="$OUT" "$@"
