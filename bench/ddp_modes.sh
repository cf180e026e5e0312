#!/usr/bin/env bash
# Per-step cost of the DDP gradient-synchronisation modes (echogen/distributed.py, docs/PERF.md change 15)
# on 2 CPU ranks (gloo), 1 thread each, against one process. Usage:
#   bash bench/ddp_modes.sh DATA OUT [STEPS] [ROUNDS]
# (TSTEPS=N: steps of the temporal-stage runs, default STEPS.)
# DATA: an EchoNet-format folder (python -m echogen phantom --out DATA --videos 6). Prints one line per run:
#   stage mode world batch mean-step-seconds (rank 0, steps after the first two, data loading included)
set -u
DATA=$1; OUT=$2; STEPS=${3:-24}; ROUNDS=${4:-2}; TSTEPS=${TSTEPS:-$STEPS}
PY=${PY:-python}
export OMP_NUM_THREADS=1
port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
one() {  # stage mode nproc batch
  local st=$1 mode=$2 np=$3 b=$4 run=$OUT/$1_$2_$3_$4_r$r STEPS=$STEPS
  [ "$st" = temporal ] && STEPS=$TSTEPS
  rm -rf "$run"
  if [ "$np" = 1 ]; then
    $PY train/train_stage.py --data "$DATA" --preset demo --stage "$st" --out "$run" --steps "$STEPS" --batch "$b" \
      --log-every 1000 --sample-every 0 --ckpt-every 100000 --threads 1 > "$run.txt" 2>&1
  else
    $PY -m torch.distributed.run --nproc_per_node="$np" --master_addr=127.0.0.1 --master_port="$(port)" \
      train/train_stage.py --data "$DATA" --preset demo --stage "$st" --out "$run" --steps "$STEPS" --batch "$b" \
      --log-every 1000 --sample-every 0 --ckpt-every 100000 --threads 1 --ddp "$mode" > "$run.txt" 2>&1
  fi
  echo "$st $mode world=$np batch=$b $(grep -o 'mean step time [0-9.]* s' "$run/log.txt" || echo FAILED) load=$(cut -d' ' -f1 /proc/loadavg)"
}
mkdir -p "$OUT"
for r in $(seq "$ROUNDS"); do
  one base single 1 2; one base single 1 4
  for m in find_unused allreduce zero_term; do one base $m 2 2; done
  one temporal single 1 2
  for m in find_unused static allreduce zero_term; do one temporal $m 2 2; done
done
