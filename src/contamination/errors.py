"""Errors that are the user's to fix (bad config, bad input files): printed without a traceback."""


class UserError(Exception):
    """A problem with the configuration or the input data, explained in the message."""


class ConfigError(UserError):
    """A config value is wrong; the message names the key and the value."""


class DataError(UserError):
    """An input file is missing, unreadable or malformed; the message names the file."""


class Locked(UserError):
    """Another live process holds the lock on an output; the message names the output and the lock."""
