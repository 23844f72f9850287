# VirtualService Operator container image.
#
# Anywhere with Docker (the base is pulled from the registry):
#   docker build -t harbor.intent.ai/library/virtualservice-operator:v1.3.0 \
#     --build-arg VERSION=1.3.0 .
# In this repository, without a Docker daemon and without a registry: `make image`.
# It builds THIS file with buildah, pointing BASE at a Debian bookworm + python3.11 base
# made from Debian's packages (hack/image/build-base.sh); python:3.11-slim is Debian
# bookworm with Python 3.11 as well, so both bases run the same steps below.
#
# A release pipeline should pin the base by digest (python:3.11-slim@sha256:...).
ARG BASE=python:3.11-slim

# ---- builder: the operator's wheel and its pinned dependencies, installed into /opt/venv ----
FROM ${BASE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build
# A virtual environment, not the system's site-packages: Debian's python3 refuses pip
# installs into it (PEP 668), and the final stage copies one self-contained folder.
RUN python3 -m venv /build/tools
# Dependencies first (from pyproject.toml alone, with a stub package and README), so that
# a change under src/ or to the README reuses this layer. The stub is deleted with
# setuptools' build/ folder: its copy would otherwise win over the real src/ (whose files
# are older than the stub).
COPY pyproject.toml ./
# The optional secret "build-ca" is a CA bundle for pip, only for builders behind a
# TLS-intercepting proxy (make image passes the host's); it is never stored in the image.
RUN --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi \
    && backend="$(python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"])')" \
    && /build/tools/bin/pip install $backend \
    && mkdir -p src/virtualservice_operator && touch README.md \
    && printf '__version__ = "0"\n' > src/virtualservice_operator/__init__.py \
    && /build/tools/bin/pip wheel --no-build-isolation --wheel-dir /deps . \
    && rm -rf /deps/virtualservice_operator-*.whl build src README.md
COPY README.md ./
COPY src ./src
# Offline from here: the build backend (pyproject's build-system.requires) is in the tools
# environment already.
RUN /build/tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python3 -m venv --without-pip /opt/venv \
    && /build/tools/bin/pip --python /opt/venv/bin/python install --no-index \
       --find-links=/deps --find-links=/wheels virtualservice-operator

# ---- final: the base, curl, and the virtual environment ----
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp

# curl: the operations guide runs
#   kubectl exec ... deployment/virtualservice-operator -- curl http://localhost:8080/debug/pprof/...
# inside the container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log

COPY --from=builder /opt/venv /opt/venv

# Same non-root identity as the Deployment's securityContext (runAsUser/Group 65532).
# The root filesystem can be read-only: nothing is written but under HOME=/tmp, which the
# Deployment mounts as an emptyDir.
USER 65532:65532
WORKDIR /tmp

# 8080: /metrics and /debug/pprof/*; 8081: /healthz and /readyz
EXPOSE 8080 8081

ENTRYPOINT ["virtualservice-operator"]
CMD ["run"]

# Last, so that a new version changes only this metadata layer. `make image` adds
# org.opencontainers.image.revision (the commit) with --label: a build argument would be
# missed by buildah's layer cache when nothing else changed.
ARG BASE
ARG VERSION=dev
LABEL org.opencontainers.image.title="virtualservice-operator" \
      org.opencontainers.image.description="Keeps Istio VirtualServices and developer placeholder Services in step with Services" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE}"
