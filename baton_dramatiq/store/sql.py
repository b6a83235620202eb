"""`Store`: durable workflow state, the one gateway every SQL statement goes through."""

from __future__ import annotations

from .llm import LLMLedger
from .maintenance import Maintenance
from .reads import Reads
from .transitions import Transitions


class Store(Transitions, Reads, Maintenance, LLMLedger):
    """Durable workflow state in PostgreSQL (psycopg 3) or SQLite.

    Parameters:
      url_or_engine(str|Engine): ``postgresql+psycopg://...``, ``sqlite:///file.db``,
        ``sqlite://`` (in memory) or a SQLAlchemy Engine.
      schema(str|None): a PostgreSQL schema to keep the tables in.

    Raises:
      ConfigurationError: for a URL that is not PostgreSQL or SQLite.
    """
