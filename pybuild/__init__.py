"""pybuild: a daemonless container image builder.

The package is imported by the CLI on every start, so it imports nothing heavy.
"""

__version__ = "0.1.0"
