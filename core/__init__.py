"""The ground floor: settings, the Redis keyspace, the Redis and Kafka adapters, the error tree, the model registry,
metrics and the clock."""

__version__ = "0.1.0"
