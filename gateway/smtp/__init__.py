"""The SMTP front: the aiosmtpd server, the DATA reader, connection limits, TLS."""
