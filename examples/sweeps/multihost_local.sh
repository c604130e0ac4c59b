#!/usr/bin/env bash
# One compiled run as NUM_PROCESSES JAX processes on this machine, as NUM_PROCESSES hosts would run
# it (docs/scaling.md): process i sees GPU i only (CUDA_VISIBLE_DEVICES=i), or, with
# JAX_PLATFORMS=cpu, DEVICES_PER_PROCESS forced CPU devices (default 2). Waits for all of them;
# exits non-zero if any failed. Process 0 writes BASE_DIR; each process logs to BASE_DIR.process_<i>.log.
#
#   examples/sweeps/multihost_local.sh 2 runs/two_procs --gin_files dqn/minatar \
#       --gin_bindings "CompiledRunner.num_seeds = 64" "Runner.num_iterations = 2"
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 NUM_PROCESSES BASE_DIR [accumbens.train arguments...]" >&2
  exit 2
fi
n=$1; base_dir=$2; shift 2
port=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
mkdir -p "$(dirname "$base_dir")"
pids=()
for ((i = 0; i < n; i++)); do
  if [ "${JAX_PLATFORMS:-}" = "cpu" ]; then
    device_env=(XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-2}")
  else
    device_env=(CUDA_VISIBLE_DEVICES="$i")
  fi
  env "${device_env[@]}" JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$n" JAX_PROCESS_ID="$i" \
    python -m accumbens.train --distributed --runner compiled --base_dir "$base_dir" "$@" \
    > "$base_dir.process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $base_dir.process_$i.log" >&2
    status=1
  fi
done
tail -n 3 "$base_dir.process_0.log"
exit $status
