"""A consumer loop that ends while its service runs makes the process exit (so a supervisor
restarts it), however it ended; during the service's own stop it does not."""

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from libs.common.service import Runtime
from libs.common.settings import ServiceSettings


def _runtime(tmp_path: Path) -> Runtime:
    settings = ServiceSettings(
        service_name="svc", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", var_dir=tmp_path
    )
    rt = Runtime(settings, migrations_dir=None)
    rt._server = SimpleNamespace(should_exit=False)  # type: ignore[assignment] - the one attribute used
    return rt


async def _ended(how: str) -> asyncio.Task[None]:
    async def loop() -> None:
        if how == "failed":
            raise RuntimeError("broken")
        if how == "cancelled":
            await asyncio.sleep(3600)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    if how == "cancelled":  # as when a library cancels the loop from inside
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return task


@pytest.mark.parametrize("how", ["failed", "cancelled", "returned"])
async def test_a_consumer_loop_that_ends_while_the_service_runs_stops_the_process(
    how: str, tmp_path: Path
) -> None:
    rt = _runtime(tmp_path)
    rt._consumer_ended(await _ended(how))
    assert rt._server.should_exit is True  # type: ignore[union-attr]
    rt.engine.dispose()


async def test_a_consumer_loop_ended_by_the_services_own_stop_changes_nothing(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    rt._stopping = True
    rt._consumer_ended(await _ended("cancelled"))
    assert rt._server.should_exit is False  # type: ignore[union-attr]
    rt.engine.dispose()
