"""The operator's benchmark: cold convergence, floor, steady state and churn (bench/README.md)."""
