"""Usage from the registry: batched rows summed per endpoint and UTC day, only the asking tenant's, in the range."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.db.tenancy import UsageRecord, UsageStore, UsageSummary
from model_engine_server.tenancy.usage import UsageRecorder


@pytest.fixture
def usage(sessions: async_sessionmaker[AsyncSession]) -> UsageStore:
    return UsageStore(sessions)


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


async def test_usage_is_summed_per_endpoint_and_day(usage: UsageStore) -> None:
    await usage.add(
        [
            UsageRecord("team-a", "chat", at(1, 9), 2, 20, 200),
            UsageRecord("team-a", "chat", at(1, 9), 1, 5, 50),  # a second flush in the same hour
            UsageRecord("team-a", "chat", at(1, 23), 1, 1, 10),
            UsageRecord("team-a", "code", at(1, 10), 3, 30, 300),
            UsageRecord("team-a", "chat", at(2, 0), 4, 40, 400),
            UsageRecord("team-b", "chat", at(1, 9), 7, 70, 700),  # another tenant's
            UsageRecord("team-a", "chat", at(3, 0), 9, 90, 900),  # outside the range
        ]
    )
    summary = await usage.summary("team-a", at(1, 0), at(3, 0))
    assert summary == [
        UsageSummary("chat", date(2026, 11, 1), 4, 26, 260),
        UsageSummary("code", date(2026, 11, 1), 3, 30, 300),
        UsageSummary("chat", date(2026, 11, 2), 4, 40, 400),
    ]


async def test_the_recorder_batches_and_keeps_records_when_a_write_fails(usage: UsageStore) -> None:
    class FlakyStore:
        """The registry, unreachable until ``fail`` is cleared."""

        fail = True

        async def add(self, records: list[UsageRecord]) -> None:
            if self.fail:
                raise OSError("database unreachable")
            await usage.add(records)

    flaky = FlakyStore()
    recorder = UsageRecorder(flaky, flush_seconds=3600)  # type: ignore[arg-type]
    recorder.record("team-a", "chat", 3, 30)
    recorder.record("team-a", "chat", 2, 20)
    await recorder.flush()  # fails: kept for the next flush
    flaky.fail = False
    recorder.record("team-a", "chat", 1, 10)
    await recorder.flush()
    [summary] = await usage.summary("team-a", at(1, 0), datetime.now(UTC).replace(year=2100))
    assert (summary.requests, summary.prompt_tokens, summary.completion_tokens) == (3, 6, 60)
