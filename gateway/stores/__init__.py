"""The gateway's own stores: staff accounts, web sessions, portal copies, AUTH throttles."""
