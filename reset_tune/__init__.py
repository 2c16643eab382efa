"""reset-tune: stochastic resetting against label noise, searched at cluster scale."""

__version__ = "0.1.0"
