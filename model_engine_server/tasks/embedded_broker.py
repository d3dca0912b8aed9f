# kombu's virtual transport is unannotated; calls into it are checked at runtime by the tests.
# mypy: disable-error-code="no-untyped-call"
"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, made safe for late acknowledgement.

kombu's transport marks a fetched message invisible and never looks at it again: acknowledged messages stay in the
table for good, and the message of a worker that is killed mid-task stays invisible for good — the task is lost.
This transport keeps kombu's tables and adds leases:

- fetching a message claims it (an ``UPDATE … RETURNING`` that re-checks visibility, so two workers never both get
  it) and stamps the claim time into the row's ``timestamp`` column: that is the start of its lease;
- a keeper thread in each consuming process renews the leases of the messages it holds (every third of the lease)
  and makes messages whose lease ran out visible again, so another worker runs the task of a killed one;
- acknowledging a message deletes its row; a requeue (reject, or a worker's graceful shutdown) makes the same row
  visible again rather than inserting a copy.

The idle polling interval is a class attribute (``LeasedSqlTransport.polling_interval``): it cannot go into
``broker_transport_options``, which kombu passes to ``sqlalchemy.create_engine`` as keyword arguments.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from json import loads
from queue import Empty
from typing import Any

import kombu.transport
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy import Engine, Table, bindparam, delete, select, update

from model_engine_server.tasks.policy import lease_renew_interval

log = logging.getLogger(__name__)

SCHEME = "llmesqla"  # broker URLs ``sqla+<sqlalchemy url>`` are rewritten to ``llmesqla+<sqlalchemy url>``
_KOMBU_SCHEMES = ("sqla+", "sqlalchemy+")


def leased_broker_url(broker_url: str) -> str:
    """The URL that selects this transport for an ``sqla+`` / ``sqlalchemy+`` URL; other URLs are returned as is."""
    for prefix in _KOMBU_SCHEMES:
        if broker_url.startswith(prefix):
            return f"{SCHEME}+{broker_url[len(prefix) :]}"
    return broker_url


def configure(*, lease_seconds: float, polling_seconds: float) -> None:
    """Register the transport under ``SCHEME`` and set its timing (per process: one broker per process)."""
    kombu.transport.TRANSPORT_ALIASES[SCHEME] = f"{__name__}:LeasedSqlTransport"
    LeasedChannel.lease_seconds = lease_seconds
    LeasedSqlTransport.polling_interval = polling_seconds


def _now() -> datetime:
    # kombu's column is a naive DateTime that it fills with datetime.now(); stay in the same clock.
    return datetime.now()


class LeasedChannel(kombu_sqlalchemy.Channel):
    lease_seconds: float = 120.0

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._held: dict[str, int] = {}  # delivery tag -> message row id, for messages this process holds
        self._held_lock = threading.Lock()
        self._queue_ids: dict[str, int] = {}
        self._keeper: threading.Thread | None = None
        self._stopped = threading.Event()

    # --- tables ----------------------------------------------------------------------------------------------------

    @property
    def _engine(self) -> Engine:
        engine: Engine = self._open()[0]
        return engine

    @property
    def _messages(self) -> Table:
        table: Table = self.message_cls.__table__
        return table

    def _queue_id(self, queue: str) -> int:
        queue_id = self._queue_ids.get(queue)
        if queue_id is None:
            queue_id = int(self._get_or_create(queue).id)
            self._queue_ids[queue] = queue_id
        return queue_id

    # --- consuming -------------------------------------------------------------------------------------------------

    def _get(self, queue: str, timeout: Any = None) -> dict[str, Any]:  # noqa: ARG002 (kombu signature)
        self._start_keeper()  # only consuming channels poll: publishers (the gateway) run no keeper
        messages = self._messages
        oldest = (
            select(messages.c.id)
            .where(messages.c.queue_id == self._queue_id(queue), messages.c.visible.is_(True))
            .order_by(messages.c.id)
            .limit(1)
        )
        # An idle poll only reads (WAL readers take no lock); the claim is a separate write that re-checks
        # visibility, so of two workers seeing the same row only one gets it (the other polls again).
        with self._engine.connect() as connection:
            candidate = connection.execute(oldest).scalar()
        if candidate is None:
            raise Empty()
        claim = (
            update(messages)
            .where(messages.c.id == candidate, messages.c.visible.is_(True))
            .values(visible=False, timestamp=_now(), version=messages.c.version + 1)
            .returning(messages.c.id, messages.c.payload)
        )
        with self._engine.begin() as connection:
            row = connection.execute(claim).first()
        if row is None:
            raise Empty()
        payload: dict[str, Any] = loads(row.payload)
        with self._held_lock:
            self._held[payload["properties"]["delivery_tag"]] = row.id
        return payload

    def _release(self, delivery_tag: str) -> int | None:
        with self._held_lock:
            return self._held.pop(delivery_tag, None)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)
        row_id = self._release(delivery_tag)
        if row_id is not None:
            with self._engine.begin() as connection:
                connection.execute(delete(self._messages).where(self._messages.c.id == row_id))

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)  # a requeue goes through _restore below
        row_id = self._release(delivery_tag)
        if row_id is not None and not requeue:
            with self._engine.begin() as connection:
                connection.execute(delete(self._messages).where(self._messages.c.id == row_id))

    def _restore(self, message: Any) -> None:
        row_id = self._release(message.delivery_tag)
        if row_id is None:
            super()._restore(message)
            return
        with self._engine.begin() as connection:
            connection.execute(update(self._messages).where(self._messages.c.id == row_id).values(visible=True))

    def close(self) -> None:
        self._stopped.set()
        super().close()

    # --- leases ----------------------------------------------------------------------------------------------------

    def _start_keeper(self) -> None:
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep_leases, name="embedded-broker-leases", daemon=True)
            self._keeper.start()

    def _keep_leases(self) -> None:
        interval = lease_renew_interval(self.lease_seconds)
        while not self._stopped.wait(interval):
            try:
                self.renew_and_expire()
            except Exception:  # a locked or briefly unavailable database: try again next round
                log.warning("Embedded broker lease renewal failed; retrying", exc_info=True)

    def renew_and_expire(self) -> int:
        """Renew the leases this process holds; make expired ones visible again. Returns how many expired."""
        messages = self._messages
        now = _now()
        with self._held_lock:
            held = list(self._held.values())
        with self._engine.begin() as connection:
            if held:
                connection.execute(
                    update(messages).where(messages.c.id.in_(bindparam("ids", expanding=True))).values(timestamp=now),
                    {"ids": held},
                )
            expired = connection.execute(
                update(messages)
                .where(
                    messages.c.visible.is_(False),
                    messages.c.timestamp < now - timedelta(seconds=self.lease_seconds),
                )
                .values(visible=True)
            )
        count = int(getattr(expired, "rowcount", 0) or 0)
        if count:
            log.warning("Embedded broker: %d message(s) of a lost worker went back to their queue", count)
        return count


class LeasedSqlTransport(kombu_sqlalchemy.Transport):
    Channel = LeasedChannel
    polling_interval = 0.05
