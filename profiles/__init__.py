"""Live customer profiles in Redis: what an event changes (pure plans) and the store that applies and reads them."""
