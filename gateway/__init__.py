"""The HTTP gateway: FastAPI routes that publish to NATS. No business logic lives here."""
