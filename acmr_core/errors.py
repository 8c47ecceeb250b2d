"""User-facing errors.

Anything raised as an :class:`ACMRError` is a problem with the user's input or environment (a missing file, a
bad image, no network). Its message is one line that says what is wrong and, where possible, what to do.
The CLI prints it on stderr and exits non-zero; the app shows it. Everything else is a bug and keeps its
traceback.
"""

import math
import reprlib


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


#: How many characters of a user's value a message quotes: enough to recognise it, never the whole of a
#: million-entry list (a message is returned to the client and logged).
QUOTE_LIMIT = 60
_LONG_INT_BITS = 200  # ~60 digits
#: How many characters of another error's text (a library's reason) a message quotes.
REASON_LIMIT = 300


def quote_value(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` shortened to at most ``limit`` characters, for quoting user input in a message.

    :mod:`reprlib` abbreviates long strings and containers without building their full repr, so quoting a
    huge value costs little; the result is then cut to ``limit`` (nested values can add up) and made one line.
    """
    if isinstance(value, int) and value.bit_length() > _LONG_INT_BITS:
        # repr() of an int over 4300 digits raises ValueError; no one reads such a number anyway.
        return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlist = shortener.maxtuple = shortener.maxset = shortener.maxdict = 6
    shortener.maxlevel = 2
    return shorten(shortener.repr(value), limit)


def shorten(text: object, limit: int = REASON_LIMIT) -> str:
    """``str(text)`` on one line and at most ``limit`` characters: e.g. a library's reason quoted in a
    message, which may itself quote a huge value."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
