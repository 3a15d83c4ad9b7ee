"""The stages of one message: submission, decision, copies, overrides, delivery; and the verify@ intake."""
