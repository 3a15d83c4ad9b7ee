"""The running service: config, SMTP front, HTTP front, storage, audit and the CLI."""
