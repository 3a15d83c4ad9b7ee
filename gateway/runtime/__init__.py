"""The running gateway: its servers built and stopped, and its metrics."""
