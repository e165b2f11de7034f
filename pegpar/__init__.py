"""pegpar: run queues of shell commands over a fleet of machines, on GNU parallel."""

__version__ = "0.1.0"
