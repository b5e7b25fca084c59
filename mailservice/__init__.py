"""The gateway: a durable outbox, a JSON API, and background delivery through the failover backend."""
