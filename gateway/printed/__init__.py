"""Printed items: the postal decision as the gateway takes it, offices and dispatches."""
