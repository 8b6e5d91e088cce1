"""Collections and their documents: router, serving and protocol (wire models)."""
