"""The HTTP API (DESIGN §11–§12): a FastAPI app factory and one thin router per domain."""

from modelbank.api.app import create_app

__all__ = ["create_app"]
