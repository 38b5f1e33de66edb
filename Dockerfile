# syntax=docker/dockerfile:1
#
# One image for every role of the engine; the command picks the role:
#   ecrm api --host 0.0.0.0   (default)     ecrm worker     ecrm topics
# Configuration is entirely by ECRM_* environment variables (see docs/deployment.md).
#
#   docker build -t ecrm-engine .

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a self-contained virtualenv -----------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore keeps tests, docs, caches, virtualenvs and local state out of the context.
COPY . .
# Smoke test of the installed package (not the source tree: -I keeps the working directory off sys.path), so a
# module or dependency missing from pyproject.toml fails the build instead of the container.
RUN pip install . \
    && ecrm --help > /dev/null \
    && python -I -c "import api.main, stream.worker"
# The configuration files of the tree (segment rules, URL patterns of `ecrm ingest-log`, ...) go to /etc/ecrm.
RUN mkdir -p /etc/ecrm \
    && if [ -d config ]; then cp -r config/. /etc/ecrm/; fi

# --- runtime: the virtualenv on a clean slim image, as an unprivileged user -----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="ecrm-engine" \
      org.opencontainers.image.description="Real-time eCRM personalization engine: Kafka + Faust + Redis + FastAPI" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1

# A fixed, non-root uid/gid so volume ownership is predictable. The home directory is the working directory:
# the Faust worker keeps its data directory (<ECRM_WORKER_APP_ID>-data) there, so it must be writable.
RUN groupadd --system --gid 10001 ecrm \
    && useradd --system --uid 10001 --gid ecrm --home-dir /var/lib/ecrm --create-home \
       --shell /usr/sbin/nologin ecrm \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/ecrm/training-log
# /var/lib/ecrm/training-log: the training-log store (ECRM_TRAINING_LOG_DIR), a named volume in docker-compose.yml
# (made here so the volume starts owned by the engine's user)

COPY --from=build /opt/venv /opt/venv
COPY --from=build /etc/ecrm /etc/ecrm

WORKDIR /var/lib/ecrm
USER 10001:10001

# 8000: API (ECRM_API_PORT). 9101: worker Prometheus metrics (ECRM_WORKER_METRICS_PORT).
EXPOSE 8000 9101

# Exec form: the process is PID 1 and gets SIGTERM from `docker stop` (uvicorn and Faust both shut down cleanly).
# In a container the API must listen on all interfaces; the port comes from ECRM_API_PORT (default 8000). It then
# needs ECRM_API_KEYS: without keys the API is open and refuses to listen on anything but loopback.
CMD ["ecrm", "api", "--host", "0.0.0.0"]
