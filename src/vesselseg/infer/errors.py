"""The inference stage's error: a plan that cannot run, a refused backend, a worker that failed."""

from vesselseg.errors import VesselsegError


class InferError(VesselsegError):
    """Inference cannot proceed; the message names the model, GPU, config field or file at fault."""
