"""tfkd-search: find the best Teacher-free Knowledge Distillation settings with Ray Tune and MLflow."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
