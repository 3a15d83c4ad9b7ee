"""Errors the pure policy code raises for bad input it was given."""


class PolicyError(ValueError):
    """A policy document is invalid; the message names the source, the key and the problem."""


class MessageError(ValueError):
    """A message cannot be classified at all (e.g. empty); classification fails closed."""


class TakesLonger(Exception):
    """Raised, only when a quick reading was asked for, by a message holding a file whose
    reading may take time (anything but text, HTML, an image or an empty file): the caller
    classifies it again without `quick`, where a long reading does no harm."""
