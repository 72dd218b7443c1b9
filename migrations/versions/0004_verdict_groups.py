"""Verdicts carry the group they judged in a column of their own: a row is stored when a
(policy, group)'s outcome changes. Rows written before take their group from their evidence.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 20:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_key', sa.String(length=256), nullable=False, server_default=''))
    verdicts = sa.table('verdicts', sa.column('id', sa.Integer), sa.column('evidence', sa.Text),
                        sa.column('group_key', sa.String))
    bind = op.get_bind()
    for row_id, evidence in bind.execute(sa.select(verdicts.c.id, verdicts.c.evidence)).all():
        group = json.loads(evidence or "{}").get("group") or []
        if group:
            key = ",".join(f"{name}={value}" for name, value in group)
            bind.execute(verdicts.update().where(verdicts.c.id == row_id).values(group_key=key))


def downgrade() -> None:
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.drop_column('group_key')
