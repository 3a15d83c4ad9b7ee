"""Errors the pure policy code raises for bad input it was given."""


class PolicyError(ValueError):
    """A policy document is invalid; the message names the source, the key and the problem."""


class MessageError(ValueError):
    """A message cannot be classified at all (e.g. empty); classification fails closed."""
