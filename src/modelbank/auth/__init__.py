"""API keys, roles and scoping (DESIGN §11)."""
