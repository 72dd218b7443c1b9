"""Operator commands that no rollout lease covers are claimed compare-and-set: of several daemons
claiming one command at once, exactly one wins; an answered command is claimed by nobody; a claim
whose time ran out is taken by another daemon."""

from __future__ import annotations

import asyncio

import pytest

from controller.store.commands import ack_command, claim_command, submit_command
from controller.store.database import Database


async def _place(db, clock) -> int:
    command = await submit_command(db, clock, rollout_id=None, kind="place", actor="tester",
                                   args={"environment": "sim", "account": "baseline", "release": "1.0.0"})
    return command.id


@pytest.mark.postgres
async def test_two_daemons_claiming_at_once_on_postgresql_one_wins_every_time(postgres_url, clock):
    from controller.store.database import resolve_url
    from controller.store.schema import upgrade

    # Two daemons: two engines, two pools, one server; each claims every command at the same instant.
    host_a, host_b = Database(resolve_url(postgres_url)), Database(resolve_url(postgres_url))
    try:
        await upgrade(host_a)
        ids = [await _place(host_a, clock) for _ in range(20)]
        for command_id in ids:
            won = await asyncio.gather(claim_command(host_a, command_id, "host-a:1", seconds=60),
                                       claim_command(host_b, command_id, "host-b:2", seconds=60))
            assert sorted(won) == [False, True], command_id
    finally:
        await host_a.close()
        await host_b.close()


async def test_a_claim_is_exclusive_until_it_expires_and_an_answered_command_is_claimed_by_nobody(db, clock):
    first, second = await _place(db, clock), await _place(db, clock)

    assert await claim_command(db, first, "host-a:1", seconds=60)
    assert not await claim_command(db, first, "host-b:2", seconds=60)
    assert await claim_command(db, first, "host-a:1", seconds=60)  # its claimer, again (an answer not written)

    assert await claim_command(db, second, "host-a:1", seconds=0)  # host-a died: its claim runs out at once
    assert await claim_command(db, second, "host-b:2", seconds=60)
    assert not await claim_command(db, second, "host-a:1", seconds=60)

    assert await ack_command(db, clock, first, accepted=True, message="placed")
    assert not await claim_command(db, first, "host-b:2", seconds=60)
