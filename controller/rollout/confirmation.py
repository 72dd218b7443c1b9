"""Confirm-promotion questions: a task that asks a stage's endpoint until it answers 2xx.

decide never waits on an endpoint: it asks for a question (`AskConfirmation`) and reads the latest
answer (`Confirmation`) on its next call. A `PromotionQuestion` is that question under way: one POST
of ``{rollout, stage, release, pipeline, verdicts}`` at a time, each given the stage's ``timeout``
(wall seconds), asked again after a backoff on the runner's clock (5 s doubling to 5 minutes) until
an answer is a 2xx. The URL's query may carry a credential: answers name the endpoint by
``host/path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from controller.clock import Backoff, Clock
from controller.logs import get_logger, scrubbed, shown_url
from controller.rollout.decide import Confirmation
from controller.rollout.pipeline import ConfirmPromotion

log = get_logger(__name__)

BACKOFF_INITIAL = 5.0
BACKOFF_MAX = 300.0
"""Clock seconds between two questions to an endpoint that said no: 5 s, doubling up to 5 minutes."""


class PromotionQuestion:
    """Asks ``config``'s endpoint about ``stage`` until it says yes; ``answer`` is its latest answer, and
    ``on_answer`` is called (it must not block) after each one."""

    def __init__(self, *, stage: str, config: ConfirmPromotion, body: Mapping[str, Any], clock: Clock,
                 on_answer: Callable[[], None]) -> None:
        self.stage = stage
        self.config = config
        self.body = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        self.clock = clock
        self.on_answer = on_answer
        self.endpoint = shown_url(config.url)
        self.answer: Confirmation | None = None
        self._task: asyncio.Task | None = None

    @property
    def asking(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._ask_until_yes(), name=f"confirm-promotion-{self.stage}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _ask_until_yes(self) -> None:
        backoff = Backoff(self.clock, initial=BACKOFF_INITIAL, maximum=BACKOFF_MAX)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as session:
            while True:
                self.answer = await self._ask(session)
                log.info("promotion_confirmation", stage=self.stage, endpoint=self.endpoint, ok=self.answer.ok,
                         detail=self.answer.detail)
                self.on_answer()
                if self.answer.ok:
                    return
                await backoff.sleep()

    async def _ask(self, session: aiohttp.ClientSession) -> Confirmation:
        where = self.endpoint.split("://", 1)[-1]
        try:
            async with session.post(self.config.url, data=self.body,
                                    headers={"Content-Type": "application/json"}) as response:
                status = response.status
        except TimeoutError:
            detail, status = f"no answer within {self.config.timeout:g} s from {where}", None
        except aiohttp.ClientError as exc:
            error = scrubbed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, self.config.url)
            detail, status = f"{error} (asking {where})", None
        else:
            detail = f"HTTP {status} from {where}"
        ok = status is not None and 200 <= status < 300
        return Confirmation(self.stage, ok, detail, self.clock.time(), self.endpoint, status)
