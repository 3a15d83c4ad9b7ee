"""The stages of one message: checks, decision, copies, overrides, delivery; the verify@ intake."""
