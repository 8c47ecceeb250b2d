"""Serving a bundle to many users: the studio service (plain data in, plain data out), the bundle registry
and the durable store of user-defined classes."""
