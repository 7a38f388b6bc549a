"""The one exception type that means "the user's input is wrong".

The CLI turns it into a single line on stderr and a non-zero exit, never a
traceback. The message must name the file, dataset or key and what is wrong.
"""


class PipelineError(Exception):
    """A user-facing error: bad input, bad config, inconsistent data."""


class ConfigError(PipelineError):
    """An unknown key, a wrong type or an out-of-range value in a config."""


class DataError(PipelineError):
    """A dataset, shard or manifest that is missing, corrupt or inconsistent."""


def os_error_text(e: OSError) -> str:
    """What went wrong, in one short line: the system's words for the errno (h5py's OSErrors
    carry HDF5's multi-line report), else the first line of the message."""
    import os

    if e.errno:
        return os.strerror(e.errno)
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
