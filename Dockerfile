# VirtualService Operator container image.
#
# No container engine runs in CI or in the development sandbox: this image is built and
# pushed (harbor.intent.ai/library/virtualservice-operator:<version>) by the release
# pipeline. Build locally with:
#   docker build -t harbor.intent.ai/library/virtualservice-operator:dev .
#
# The release pipeline should pin both base images by digest (python:3.11-slim@sha256:...).

# ---- builder: build the operator wheel and the wheels of its pinned dependencies ----
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --wheel-dir /wheels .

# ---- final: a slim runtime with only the installed wheels ----
FROM python:3.11-slim

LABEL org.opencontainers.image.title="virtualservice-operator" \
      org.opencontainers.image.description="Keeps Istio VirtualServices and developer placeholder Services in step with Services" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

# curl: the operations guide runs
#   kubectl exec ... deployment/virtualservice-operator -- curl http://localhost:8080/debug/pprof/...
# inside the container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /wheels /tmp/wheels
RUN pip install --no-index --find-links=/tmp/wheels virtualservice-operator \
    && rm -rf /tmp/wheels

# Same non-root identity as the Deployment's securityContext (runAsUser/Group 65532).
USER 65532:65532
WORKDIR /tmp

# 8080: /metrics and /debug/pprof/*; 8081: /healthz and /readyz
EXPOSE 8080 8081

ENTRYPOINT ["virtualservice-operator"]
CMD ["run"]
