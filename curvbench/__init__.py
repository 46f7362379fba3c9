"""curvbench: compare optimizers on real workloads, with honest timing and MLflow tracking."""

__version__ = "0.1.0"
