"""Tests of the SQLite/PostgreSQL recorders, the Redis Streams fan-out and what they share."""
