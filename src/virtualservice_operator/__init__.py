"""Keeps Istio VirtualServices and developer placeholder Services in step with Services."""

# The one version: pyproject (dynamic), `--version`, the image tag and label (v<this>),
# the chart's appVersion and deployments/ all follow it; tests check that they agree.
__version__ = "1.3.0"
