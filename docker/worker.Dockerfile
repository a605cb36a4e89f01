# syntax=docker/dockerfile:1
#
# The GPU worker: `ascent worker` on a CUDA PyTorch base. Build from the repository root:
#
#     docker build -f docker/worker.Dockerfile -t ascent-worker:local .
#     docker run --rm --init --gpus all -e ASCENT_BROKER_URL=... -e ASCENT_STORE=s3://... \
#         -v ascent-torch:/var/cache/torch ascent-worker:local
#
# One container per GPU and one pool process per container (`--concurrency 1`): CUDA cannot start in a
# forked child whose parent touched it, and a GPU runs one shard at a time best. The entrypoint
# (docker/claim-gpu.sh) gives each container a GPU that no other container on the host holds; set
# CUDA_VISIBLE_DEVICES to choose one yourself. Pretrained weights are cached in TORCH_HOME, a volume.

# The base image ships torch and torchvision as a matched CUDA pair; pyproject.toml pins torch>=2.14,<2.15.
# For another CUDA line (Blackwell GPUs need 12.8 or later), pass e.g.
#     --build-arg BASE_IMAGE=pytorch/pytorch:2.14.0-cuda12.8-cudnn9-runtime
ARG BASE_IMAGE=pytorch/pytorch:2.14.0-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

# MALLOC_*: glibc keeps freed activation buffers instead of unmapping them and faulting them in again
# on the next pass (CPU workers: fool 1.06x, page faults / 8; bench/RESULTS.md "allocators").
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TORCH_HOME=/var/cache/torch \
    ASCENT_GPU_CLAIMS=/var/lib/ascent/gpu-claims \
    MALLOC_MMAP_THRESHOLD_=4294967296 \
    MALLOC_TRIM_THRESHOLD_=4294967296

# A fixed uid, so the shared volumes' ownership is the same in every replica.
RUN useradd --uid 10001 --create-home --home-dir /home/ascent --shell /usr/sbin/nologin ascent \
 && mkdir -p /var/cache/torch /var/lib/ascent/gpu-claims \
 && chown ascent:ascent /var/cache/torch /var/lib/ascent/gpu-claims

COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY producer /src/producer
COPY worker /src/worker

# torch and torchvision are constrained to exactly the base image's builds, so pip installs only the
# other dependencies, never a second (mismatched) torch; if the base is outside pyproject's range, the
# install fails here instead. The import then proves the pair loads together.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "from importlib.metadata import version as v; print('torch==' + v('torch')); print('torchvision==' + v('torchvision'))" \
        > /tmp/base-torch.txt \
 && pip install --constraint /tmp/base-torch.txt /src \
 && python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'CUDA', torch.version.cuda)" \
 && ascent --help > /dev/null \
 && python -c "import ascent.worker.handler" \
 && rm -rf /src /tmp/base-torch.txt

COPY --chmod=0755 docker/claim-gpu.sh /usr/local/bin/claim-gpu

USER ascent
WORKDIR /home/ascent
VOLUME ["/var/cache/torch"]

# Run with an init (`docker run --init`, compose `init: true`) so SIGTERM reaches the worker, which then
# finishes its running shard before exiting (warm shutdown): give it a long stop timeout.
ENTRYPOINT ["claim-gpu"]
CMD ["ascent", "worker", "--concurrency", "1"]
