"""The durable job queue (SQLAlchemy Core over SQLite or PostgreSQL)."""
