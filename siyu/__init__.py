"""siyu: predictive modeling and experimentation for private-domain retail."""

__version__ = "0.1.0"
