"""edgepath: compress pathology foundation models into small, fast, robust edge tile encoders."""

__version__ = "0.1.0"

__all__ = ["__version__"]
