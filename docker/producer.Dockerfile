# syntax=docker/dockerfile:1
#
# The producer image, without torch: `ascent submit`, `ascent status`, `ascent collect`, `ascent flower`.
# Build from the repository root:
#
#     docker build -f docker/producer.Dockerfile -t ascent-producer:local .
#     docker run --rm -e ASCENT_BROKER_URL=... -e ASCENT_STORE=s3://... -v "$PWD/images:/inputs:ro" \
#         ascent-producer:local ascent submit fool --images /inputs --target 6

# Pinned by tag and by the digest of its multi-architecture index.
# Refresh: docker buildx imagetools inspect python:3.11.14-slim-bookworm
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --uid 10001 --create-home --home-dir /home/ascent --shell /usr/sbin/nologin ascent

# Dependencies first (a layer that survives code changes), then our package with --no-deps: installing it
# with its dependencies would pull in pyproject's torch and torchvision, about 5 GB the producer never uses.
COPY docker/producer.requirements.txt /tmp/requirements.txt
RUN pip install --requirement /tmp/requirements.txt && rm /tmp/requirements.txt

COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY producer /src/producer
COPY worker /src/worker
RUN pip install --no-deps /src \
 && rm -rf /src \
 && if python -c "import torch" 2>/dev/null; then echo "torch must not be in the producer image" >&2; exit 1; fi \
 && ascent --help > /dev/null \
 && python -c "import ascent.producer.cli; import sys; assert 'torch' not in sys.modules"

USER ascent
WORKDIR /home/ascent

# compose runs `ascent flower ...` and one-off `ascent submit|status|collect ...` with this image.
CMD ["ascent", "--help"]
