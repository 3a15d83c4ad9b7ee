"""The transfer policy as data and the pure decision engine.

Nothing in this package does I/O: callers read files, the registry and the clock, and pass
what they read in. The public entry points are re-exported here.
"""
