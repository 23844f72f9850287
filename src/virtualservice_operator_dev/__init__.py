"""Development helpers: the local control plane used by the demo, the tests and the benchmark.

Not shipped in the wheel (packaging includes `virtualservice_operator` only) and never
imported by the operator; needs the `dev` extra (`pip install -e '.[dev]'`).
"""
