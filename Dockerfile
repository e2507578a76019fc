# syntax=docker/dockerfile:1
# meshplan's HTTP service and search worker (`meshplan serve`, `meshplan worker`,
# `meshplan db upgrade`). Two stages: the builder makes a wheel of this checkout and installs it
# with the `service` and `postgres` extras into a virtual environment; the runtime stage copies
# only that environment and runs it as an unprivileged user.
#
# No torch here: the `runtime` extra (the torch worker that calibrates and runs plans) belongs on
# the GPU nodes, with the CUDA build that matches their driver, not in the API image.
#
#   docker build -t meshplan .
#   docker run --rm -p 8000:8000 meshplan            # SQLite in /var/lib/meshplan
#   docker compose up                                # api + workers + PostgreSQL
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/meshplan \
 && /opt/meshplan/bin/pip install --upgrade pip
WORKDIR /src
# The build context is filtered by .dockerignore (no .venv, .git, tests or caches).
COPY . .
# All wheels (numpy, ortools, pydantic-core, psycopg-binary) are manylinux builds: no compiler.
RUN /opt/meshplan/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/meshplan/bin/pip install "$(ls /wheels/meshplan-*.whl)[service,postgres]" \
 && /opt/meshplan/bin/meshplan --version

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
# A fixed uid/gid, so that volumes and Kubernetes' runAsNonRoot/runAsUser checks can name it.
ARG MESHPLAN_UID=10001
RUN groupadd --system --gid "${MESHPLAN_UID}" meshplan \
 && useradd --system --uid "${MESHPLAN_UID}" --gid meshplan \
        --home-dir /var/lib/meshplan --create-home --shell /usr/sbin/nologin meshplan
# The same path as in the builder: the environment's scripts name its python by absolute path.
COPY --from=builder /opt/meshplan /opt/meshplan
ENV PATH=/opt/meshplan/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MESHPLAN_HOST=0.0.0.0 \
    MESHPLAN_PORT=8000 \
    MESHPLAN_DATABASE_URL=sqlite:////var/lib/meshplan/meshplan.db
WORKDIR /var/lib/meshplan
USER ${MESHPLAN_UID}:${MESHPLAN_UID}
EXPOSE 8000
# Liveness of `meshplan serve` (slim images have no curl); compose turns it off for the worker
# and the migration, which serve no HTTP.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MESHPLAN_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["meshplan"]
CMD ["serve"]
