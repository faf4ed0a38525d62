"""The one error the official-weights import raises; its message names the file, key or field at fault."""

from vesselseg.errors import VesselsegError


class OfficialImportError(VesselsegError, ValueError):
    """An official Sa2VA folder cannot be imported as it is (unknown family, unmapped or mis-shaped tensors, …)."""
