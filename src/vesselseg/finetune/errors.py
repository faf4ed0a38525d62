"""The training error type: what the stage reports, naming the field, artifact or rank at fault."""

from vesselseg.errors import VesselsegError


class TrainingError(VesselsegError):
    """Fine-tuning cannot start, cannot resume, or a worker failed."""
