"""Development helpers: the local control plane used by the demo, the tests and the benchmark.

Needs the `dev` extra (`pip install -e '.[dev]'`); the operator itself never imports this.
"""
