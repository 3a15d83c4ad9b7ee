"""The audit trail: events, their store and keys, export, and alerts to governance."""
