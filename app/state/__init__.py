"""State shared between API processes: Redis (answer and vector caches, keys, rate limits,
jobs) and the data dir (collection catalogue, the single-writer lock)."""
