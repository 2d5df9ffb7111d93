"""Follow one counter through an etcd watch, resuming after breaks.

The watch resumes after the last revision it sent. When that revision has
been compacted, it reads the counter again and sends the value if it
changed, so the latest value always arrives, though values in between may
be skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from counter_svc.storage import CounterStore, CounterValue, counter_value
from registry.backoff import Backoff
from registry.errors import EtcdUnavailableError, RevisionCompactedError

logger = logging.getLogger(__name__)

# Delays are drawn at random up to 0.2, 0.4, 0.8, 1.6 and then 2 s, so ten
# failed resumes in a row wait up to 15 s (7.5 s on average) before the
# caller gets the error.
MAX_FAILED_RESUMES = 10


async def watch_counter(
    store: CounterStore, name: str
) -> AsyncGenerator[CounterValue, None]:
    """Yield the current value at once, then one value per change.

    Raises EtcdUnavailableError when the watch cannot be resumed after
    MAX_FAILED_RESUMES attempts in a row.
    """
    current, store_revision = await store.read_with_revision(name)
    yield current
    last_sent = current.revision
    resume_from = store_revision + 1
    backoff = Backoff(initial=0.2, maximum=2.0)
    while True:
        try:
            changes = _changes(store, name, resume_from, backoff)
            async with contextlib.aclosing(changes):
                async for value in changes:
                    yield value
                    last_sent = value.revision
                    resume_from = value.revision + 1
        except RevisionCompactedError as exc:
            logger.info(
                "watch compacted name=%s compact_revision=%d; reading again",
                name,
                exc.compact_revision,
            )
            current, store_revision = await store.read_with_revision(name)
            resume_from = store_revision + 1
            if current.revision != last_sent:
                last_sent = current.revision
                yield current
        except EtcdUnavailableError as exc:
            if backoff.attempts >= MAX_FAILED_RESUMES:
                raise
            delay = backoff.next_delay()
            logger.warning(
                "watch broke name=%s error=%s; resuming at revision %d in %.2f s",
                name,
                exc,
                resume_from,
                delay,
            )
            await asyncio.sleep(delay)


async def _changes(
    store: CounterStore, name: str, start_revision: int, backoff: Backoff
) -> AsyncGenerator[CounterValue, None]:
    # The watch covers every key that starts with this key, such as the
    # counter `name2` for `name`, so events of other keys are skipped.
    key = store.value_key(name)
    watch = store.etcd.watch_prefix(key, start_revision=start_revision)
    try:
        async for batch in watch:
            # Any response, even the empty first one, proves that the stream
            # works, so the next break starts the backoff from the beginning.
            backoff.reset()
            for event in batch.events:
                if event.kv.key != key:
                    continue
                if event.kind == "delete":
                    yield CounterValue(name, 0, event.kv.mod_revision)
                else:
                    yield counter_value(name, event.kv)
    finally:
        watch.cancel()
