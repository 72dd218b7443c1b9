"""Deployments (what release runs on which account, at most one live per account) and the
rollout's decision state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decision', sa.Text(), nullable=False, server_default='{}'))
    op.create_table('deployments',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=True),
    sa.Column('environment', sa.String(length=64), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=False),
    sa.Column('instance', sa.String(length=128), nullable=False),
    sa.Column('release_id', sa.Integer(), nullable=False),
    sa.Column('config_sha256', sa.String(length=64), nullable=False),
    sa.Column('previous_id', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['config_sha256'], ['config_snapshots.sha256'], ),
    sa.ForeignKeyConstraint(['previous_id'], ['deployments.id'], ),
    sa.ForeignKeyConstraint(['release_id'], ['releases.id'], ),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployments_rollout_id'), ['rollout_id'], unique=False)
        batch_op.create_index('uq_deployments_live_account', ['environment', 'account'], unique=True,
                              sqlite_where=sa.text('stopped_at IS NULL'),
                              postgresql_where=sa.text('stopped_at IS NULL'))


def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index('uq_deployments_live_account', sqlite_where=sa.text('stopped_at IS NULL'),
                            postgresql_where=sa.text('stopped_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_deployments_rollout_id'))
    op.drop_table('deployments')
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.drop_column('decision')
