"""Exception types shared by the library; each message names the file, field or value at fault."""


class VesselsegError(Exception):
    """Base class for errors the command line reports without a traceback."""


class DataError(VesselsegError, ValueError):
    """Input data is unusable: missing, unreadable, inconsistent or leaking across splits."""


class StorageError(VesselsegError):
    """The object store refused or failed a request; the message names endpoint, bucket and key."""


class IntegrityError(StorageError):
    """A downloaded file does not match the sha256 or size recorded in its artifact manifest."""


class HonestyError(VesselsegError):
    """An evaluation input would produce a number that does not measure the model."""
