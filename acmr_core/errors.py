"""User-facing errors.

Anything raised as an :class:`ACMRError` is a problem with the user's input or environment (a missing file, a
bad image, no network). Its message is one line that says what is wrong and, where possible, what to do.
The CLI prints it on stderr and exits non-zero; the app shows it. Everything else is a bug and keeps its
traceback.
"""


class ACMRError(Exception):
    """Base class of every error whose message is meant for the user."""


class DataError(ACMRError):
    """A dataset file is missing, unreadable or inconsistent."""


class ImageError(ACMRError):
    """An image cannot be used (not an image, empty, truncated, too large...)."""


class BackboneError(ACMRError):
    """Backbone weights cannot be obtained, or do not match what a file/model expects."""


class BundleError(ACMRError):
    """A model bundle is missing, corrupt, or inconsistent with its backbone."""


class DownloadError(ACMRError):
    """A download failed (offline, bad URL, checksum mismatch...)."""


class UserClassError(ACMRError):
    """A user-defined class is invalid (bad name, bad attributes...)."""
