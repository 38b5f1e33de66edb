"""The HTTP routes, one module per resource (events, customers, recommendations, segments, health)."""
