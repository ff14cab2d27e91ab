"""The one exception type for mistakes in the user's input.

Library code raises `GPT2Error` for anything the user can fix (a missing or
corrupt file, an invalid option, an empty corpus) with a message that names the
problem and the fix. The command line prints that message on one line and
exits with status 2, without a traceback; anything else is a bug and keeps its
traceback.
"""


class GPT2Error(Exception):
    """A problem with the user's input, explained in one line."""


class ConfigError(GPT2Error, ValueError):
    """An invalid configuration value, TOML file or command-line override."""
