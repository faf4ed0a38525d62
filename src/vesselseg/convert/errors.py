"""Errors of the conversion; each message names the file or key at fault."""

from vesselseg.errors import VesselsegError


class ConversionError(VesselsegError, ValueError):
    """The checkpoint cannot be converted: missing, truncated, or not made for the model config it came with."""


class ParityError(ConversionError):
    """The converted folder does not reproduce the training-time model's outputs within tolerance."""
