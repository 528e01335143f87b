"""Command-line interface (``cosim``)."""
