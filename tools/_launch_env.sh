# Sourced by the dist_* and slurm_* scripts: ROOT (the repository), PYTHON (the repository's
# .venv/bin/python when present, else python), PYTHONPATH starting with ROOT, and the launch
# functions torchrun_tool and srun_tool.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON=python
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# torchrun GPUS processes on this node, each running tools/SCRIPT ARGS...
# env: NNODES (1), NODE_RANK (0), PORT (29500), MASTER_ADDR (127.0.0.1)
torchrun_tool() {
    local gpus=$1 script=$2
    shift 2
    exec "$PYTHON" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" \
        --master_port="${PORT:-29500}" \
        "$ROOT/tools/$script" "$@"
}

# srun a job named JOB on PARTITION, each task running tools/SCRIPT ARGS... (set -x shows it).
# env: GPUS (8 tasks), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS (extra srun options),
#      PORT (the master port, exported as MASTER_PORT; mmengine defaults to 29500)
srun_tool() {
    local partition=$1 job_name=$2 script=$3
    shift 3
    local gpus_per_node=${GPUS_PER_NODE:-8}
    if [[ -n "${PORT:-}" ]]; then
        export MASTER_PORT=$PORT
    fi
    set -x
    # SRUN_ARGS is split into words on purpose.
    # shellcheck disable=SC2086
    exec srun -p "$partition" \
        --job-name="$job_name" \
        --gres=gpu:"$gpus_per_node" \
        --ntasks="${GPUS:-8}" \
        --ntasks-per-node="$gpus_per_node" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} \
        "$PYTHON" -u "$ROOT/tools/$script" "$@"
}
