"""The PostgreSQL adapter (needs the ``postgres`` extra: psycopg 3)."""

from .adapter import PostgresSessionStoreAdapter, PostgresStatistics

__all__ = ["PostgresSessionStoreAdapter", "PostgresStatistics"]
