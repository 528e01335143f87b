"""Exceptions raised for bad user input.

Every error names where the bad value came from (file and field) and what was expected, so a user
can fix a YAML file without reading cosim's source.
"""

from __future__ import annotations


class CosimError(Exception):
    """Base class of all errors cosim raises on purpose."""


class ConfigError(CosimError, ValueError):
    """A configuration value (YAML field, CLI option, API argument) is invalid.

    Attributes:
        source: file path or other origin of the value (``"<api>"`` for Python calls).
        field: dotted path of the field inside the source, e.g. ``links[3].bandwidth``.
        message: what is wrong and what was expected.
    """

    def __init__(self, source: str, field: str, message: str):
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class FlowError(CosimError, ValueError):
    """A flow set handed to a network backend is invalid (bad GPU index, size, dependency ...)."""
