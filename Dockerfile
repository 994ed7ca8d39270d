# syntax=docker/dockerfile:1
# The reproduction as an image (README.md, "The container"):
#   docker build --build-arg REVISION="$(git describe --always --dirty --abbrev=12)" -t repro .
#       (CUDA 13.0, the paper profile; add --build-arg VARIANT=cpu for the CPU-only image that
#       runs the tiny profile)
#   docker run --gpus all -v repro-cache:/cache -v "$PWD/results:/results" repro
# docs/container.md says how CI tests what this installs, and where the revision goes.
#
# Base images are pinned by digest, Python is an exact CPython build, and every Python
# package comes from a hash-pinned lock installed with --require-hashes --no-deps, so a
# rebuild years from now gets the same environment or fails loudly.

# CUDA 13.0.3 runtime + cuDNN 9 on Ubuntu 24.04, matching torch 2.13.0's CUDA 13.0 wheels
# (cuda-toolkit 13.0.3 in requirements/cuda.lock). The digest is the tag's linux/amd64
# manifest (Docker Hub: nvidia/cuda, 13.0.3-cudnn-runtime-ubuntu24.04), the only platform the
# locks are resolved for. Other projects record sha256:14f6d08d1cd4a96effbfe3101d0b56326f552c
# 199d05e4979ee0bd616df5811b for the tag itself (presumably its multi-platform index).
ARG CUDA_BASE=nvidia/cuda:13.0.3-cudnn-runtime-ubuntu24.04@sha256:af851538a2bb05f587f27b660d61de3643d964e75ef5c04f4086ff2b36f2a12a
# The same Ubuntu without CUDA, for the CPU variant.
ARG CPU_BASE=ubuntu:24.04@sha256:4fbb8e6a8395de5a7550b33509421a2bafbc0aab6c06ba2cef9ebffbc7092d90
# uv installs the exact CPython (Ubuntu 24.04 ships 3.12; the locks are for 3.11). uv checks
# the interpreter download against the sha256 it carries for each release.
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.11.28@sha256:0f36cb9361a3346885ca3677e3767016687b5a170c1a6b88465ec14aefec90aa
ARG VARIANT=cuda

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_BASE} AS base-cuda
ENV REPRO_LOCK_FILE=/opt/repro/requirements/cuda.lock \
    REPRO_PROFILE=paper

FROM ${CPU_BASE} AS base-cpu
# torch 2.13.0+cpu is on PyTorch's CPU index, not on PyPI; its hash is pinned in the lock.
ENV REPRO_LOCK_FILE=/opt/repro/requirements/cpu.lock \
    REPRO_PROFILE=tiny \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu

# DL3006 (untagged FROM) is a false positive here: base-${VARIANT} is one of the two stages
# above (base-cuda or base-cpu), each pinned by digest; hadolint cannot resolve the variable.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS final
ARG VERSION=0.1.0
# Where the source lives: pass the public repository, --build-arg SOURCE="$(git remote get-url
# origin)"; the default names the paper this code reproduces.
ARG SOURCE=https://arxiv.org/abs/2603.25325
LABEL org.opencontainers.image.title="repro" \
      org.opencontainers.image.description="Reproduction of arXiv 2603.25325: SAE features of weight-pruned language models" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="https://arxiv.org/abs/2603.25325" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHON_VERSION=3.11.15 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    MPLCONFIGDIR=/tmp/matplotlib \
    REPRO_OUT=/results

# Layer 1, the interpreter: changes only with PYTHON_VERSION. The venv's pip is the one
# bundled with that CPython (ensurepip), so nothing unpinned is downloaded here.
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    uv python install "$PYTHON_VERSION" \
    && "$(uv python find "$PYTHON_VERSION")" -m venv "$VIRTUAL_ENV"

# Layer 2, the dependencies: changes only with the lock files, never with the code. The build
# backend comes first, from build.lock (the same pins and hashes as the lock's), so that the
# lock's two sdists build against it with --no-build-isolation: nothing unhashed is fetched.
COPY requirements/ /opt/repro/requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps --only-binary :all: \
        -r /opt/repro/requirements/build.lock \
    && pip install --no-cache-dir --require-hashes --no-deps --no-build-isolation \
        -r "$REPRO_LOCK_FILE" \
    && pip check

# The commit the image is built from. Declared here, after the dependencies, because every
# RUN after an ARG sees it: a new commit rebuilds the package layer, not the 3 GB of wheels.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"

# Layer 3, the package (code, study files, tiny assets, expected outputs; README and LICENSE
# go into its metadata): built offline against the locked setuptools, without dependencies,
# so it cannot change a pinned version. setup.py writes REVISION into the package: `repro
# --version` and every manifest's code_version name the commit.
COPY pyproject.toml setup.py README.md LICENSE /opt/repro/src/
COPY repro/ /opt/repro/src/repro/
RUN REPRO_REVISION="$REVISION" \
    pip install --no-cache-dir --no-deps --no-build-isolation /opt/repro/src \
    && rm -rf /opt/repro/src

COPY --chmod=0755 entrypoint.sh /usr/local/bin/entrypoint.sh

# A non-root user owns the two volumes; the model cache and the results outlive the container.
RUN useradd --create-home --uid 10001 --user-group repro \
    && install -d -o repro -g repro /cache /cache/huggingface /results
VOLUME ["/cache", "/results"]
USER 10001:10001
WORKDIR /home/repro

# HF_TOKEN is read at run time only (`docker run -e HF_TOKEN ...`), never baked into a layer.
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["all"]
