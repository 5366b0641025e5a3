"""The outbox keeps the trace context of the span that wrote each row (shared/outbox.py, issue 20).

Revision ID: auth_outbox_trace
Revises: auth_0003
"""

from alembic import op

from shared.outbox import add_trace_context_column

revision = "auth_outbox_trace"
down_revision = "auth_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_trace_context_column(op)


def downgrade() -> None:
    op.drop_column("outbox", "trace_context")
