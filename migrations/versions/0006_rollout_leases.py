"""Rollout leases and account claims: one owner per rollout (a lease with an epoch, copied onto the
rollout as the fence of its writes) and at most one active rollout per account, as a primary key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14 10:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_TERMINAL = ('promoted', 'rolled_back', 'dry_run_done')


def upgrade() -> None:
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('epoch', sa.Integer(), server_default='0', nullable=False))
    op.create_table('rollout_leases',
    sa.Column('rollout_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('owner', sa.String(length=128), server_default='', nullable=False),
    sa.Column('epoch', sa.Integer(), server_default='0', nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], ),
    sa.PrimaryKeyConstraint('rollout_id')
    )
    with op.batch_alter_table('rollout_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollout_leases_expires_at'), ['expires_at'], unique=False)
    op.create_table('account_claims',
    sa.Column('environment', sa.String(length=64), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], ),
    sa.PrimaryKeyConstraint('environment', 'account')
    )
    with op.batch_alter_table('account_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_claims_rollout_id'), ['rollout_id'], unique=False)
    # The rollouts under way get an unowned lease and claim their accounts, as new ones do.
    bind = op.get_bind()
    active = bind.execute(sa.text('SELECT id, pipeline FROM rollouts WHERE state NOT IN :done')
                          .bindparams(sa.bindparam('done', expanding=True)), {'done': list(_TERMINAL)}).all()
    for rollout_id, pipeline in active:
        bind.execute(sa.text("INSERT INTO rollout_leases (rollout_id, owner, epoch) VALUES (:id, '', 0)"),
                     {'id': rollout_id})
        stages = json.loads(pipeline).get('stages', [])  # a pipeline without stages holds no account
        held = {(s['environment'], s['account']) for s in stages} | {
            (s['environment'], s['baseline']) for s in stages if s.get('baseline')}
        for environment, account in sorted(held):
            bind.execute(sa.text('INSERT INTO account_claims (environment, account, rollout_id) '
                                 'VALUES (:environment, :account, :id)'),
                         {'environment': environment, 'account': account, 'id': rollout_id})


def downgrade() -> None:
    with op.batch_alter_table('account_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_claims_rollout_id'))
    op.drop_table('account_claims')
    with op.batch_alter_table('rollout_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rollout_leases_expires_at'))
    op.drop_table('rollout_leases')
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.drop_column('epoch')
