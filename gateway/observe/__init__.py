"""What the gateway tells its operators: metrics and log lines (never message content)."""
