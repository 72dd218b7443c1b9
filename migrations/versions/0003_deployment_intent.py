"""Deployments carry their intent: a state ("starting" until the release started, then "running")
and the account's exchange settings read before the placement, which a rollback restores.

Rows written before this revision were recorded once their release ran: they are "running",
with no settings snapshot.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=16), nullable=False, server_default='running'))
        batch_op.add_column(sa.Column('settings_before', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_column('settings_before')
        batch_op.drop_column('state')
