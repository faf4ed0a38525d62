"""vesselseg: fine-tune, convert, run and honestly evaluate Sa2VA-architecture vessel segmenters."""

__version__ = "0.1.0"
