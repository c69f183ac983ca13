#!/usr/bin/env bash
# Train with srun: GPUS tasks in all, GPUS_PER_NODE per node, one process per task.
# usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
# env: GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PORT (see srun_tool in _launch_env.sh)
# mmengine's slurm launcher reads SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST and SLURM_LOCALID
# (set by srun) and asks `scontrol show hostname` for the master address.
set -euo pipefail
if [[ $# -lt 4 ]]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_launch_env.sh"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
srun_tool "$PARTITION" "$JOB_NAME" train.py "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
