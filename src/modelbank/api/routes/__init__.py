"""One router per domain; each handler: check the caller, call a service, present."""
