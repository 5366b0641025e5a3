"""Tables of the crm service (its own database only)."""
from shared.db import new_metadata
from shared.service import library_tables

metadata = new_metadata()
tables = library_tables(metadata)
