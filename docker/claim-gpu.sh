#!/bin/sh
# claim-gpu COMMAND [ARG...]: run COMMAND on one GPU of this host that no other container holds.
#
# Docker gives every replica of a compose service that reserves `count: 1` the same GPU
# (docker/compose#11863), so `docker compose up --scale worker=4` on a 4-GPU host would stack four
# workers on GPU 0. The worker service therefore sees every GPU and each container claims one here:
# an exclusive flock on $ASCENT_GPU_CLAIMS/<GPU UUID>.lock, a directory on a volume shared by the
# replicas. The lock's descriptor survives the exec, so COMMAND holds the claim for its whole life and
# the kernel releases it when the container stops, however it stops.
#
# A CUDA_VISIBLE_DEVICES set by the operator is respected as is. Without nvidia-smi (no GPU was
# requested, e.g. a CPU-only trial run) COMMAND runs unchanged.
set -eu

claims=${ASCENT_GPU_CLAIMS:-/var/lib/ascent/gpu-claims}

if [ -z "${CUDA_VISIBLE_DEVICES:-}" ] && command -v nvidia-smi >/dev/null 2>&1; then
    if ! uuids=$(nvidia-smi --query-gpu=uuid --format=csv,noheader) || [ -z "$uuids" ]; then
        echo "claim-gpu: nvidia-smi lists no GPU; is the NVIDIA container toolkit installed?" >&2
        exit 1
    fi
    claimed=
    for uuid in $uuids; do
        exec 9>"$claims/$uuid.lock"
        if flock -n 9; then
            claimed=$uuid
            break
        fi
        exec 9>&-
    done
    if [ -z "$claimed" ]; then
        echo "claim-gpu: all $(echo "$uuids" | wc -l) GPUs are held by other workers;" \
            "scale the worker service to at most one container per GPU" >&2
        exit 1
    fi
    export CUDA_VISIBLE_DEVICES="$claimed"
    echo "claim-gpu: this worker runs on $claimed" >&2
fi

exec "$@"
