"""The shared library's tables: outbox, inbox, data keys.

Revision ID: auth_0001
Revises:
"""

from alembic import op

from shared.service import create_library_tables

revision = "auth_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_library_tables(op)


def downgrade() -> None:
    raise RuntimeError("the library tables are not dropped by a downgrade")
