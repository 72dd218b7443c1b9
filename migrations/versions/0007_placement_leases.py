"""Placement leases: the lease each bot's supervisor holds on its instance, the bot's dead man's switch;
and the claim of an operator command that no rollout lease covers (carried out by one daemon only).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-21 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('placement_leases',
    sa.Column('instance', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.Integer(), server_default='0', nullable=False),
    sa.Column('owner', sa.String(length=128), server_default='', nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('instance')
    )
    with op.batch_alter_table('placement_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_placement_leases_expires_at'), ['expires_at'], unique=False)
    with op.batch_alter_table('operator_commands', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('operator_commands', schema=None) as batch_op:
        batch_op.drop_column('claimed_until')
        batch_op.drop_column('claimed_by')
    with op.batch_alter_table('placement_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_placement_leases_expires_at'))
    op.drop_table('placement_leases')
