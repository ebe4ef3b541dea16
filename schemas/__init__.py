"""Message models and subject names: the public contract on NATS."""
