"""Keeps Istio VirtualServices and developer placeholder Services in step with Services."""

__version__ = "0.1.0"
