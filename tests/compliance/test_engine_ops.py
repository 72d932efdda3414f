"""The compliance engine's /metrics and /readyz (vigil compliance --metrics-port): database
figures, decisions by rule, a failed runner and a stalled event loop."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from alerts import service as alerts_service
from compliance.log import service as compliance_log
from runtime import engine
from tests.compliance import stalling_runners
from tests.metrics import sample
from vigil import ops


@pytest.fixture
def engine_health():
    return ops.Health()


async def test_metrics_read_the_database_and_count_decisions_by_rule(
    resources_for, db, clock, engine_health
):
    async with resources_for() as resources:
        figures = engine.watch(resources=resources, health=engine_health)
        with ops.OpsServer(health=engine_health, collectors=[figures]) as server:
            url = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                before = (await client.get("/metrics")).text
                decided = sample(before, "vigil_rule_decisions_total", rule="M8", kind="drill.held")
                for severity in ("critical", "critical", "warning"):
                    alerts_service.raise_alarm(
                        db,
                        source_type="device",
                        source_id=f"lift-{severity}-{clock.now_ms()}",
                        type="test.metric",
                        severity=severity,
                        message="for the metrics",
                        audience=["firm"],
                        at=clock.now(),
                    )
                    clock.advance(1)
                compliance_log.append(
                    db,
                    kind="drill.held",
                    subject_type="device",
                    subject_id="lift-1",
                    body={"note": "a drill"},
                    actor="test",
                    at=clock.now(),
                )
                after = (await client.get("/metrics")).text
                assert sample(after, "vigil_open_alarms", severity="critical") == 2
                assert sample(after, "vigil_open_alarms", severity="warning") == 1
                # rule M8 from the kind, as the body names no rule
                assert (
                    sample(after, "vigil_rule_decisions_total", rule="M8", kind="drill.held")
                    == decided + 1
                )
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text


async def test_a_failed_runner_makes_the_engine_not_ready_until_restarted(
    resources_for, clock, engine_health
):
    stop = asyncio.Event()
    stalling_runners.FAILED = asyncio.Event()
    async with resources_for() as resources:
        run = asyncio.create_task(
            engine.run(
                resources=resources,
                stop=stop,
                modules=["tests.compliance.stalling_runners"],
                health=engine_health,
            )
        )
        await asyncio.wait_for(stalling_runners.FAILED.wait(), 10)
        (problem,) = engine_health.problems()
        assert problem.startswith("tests.compliance.stalling_runners: ended with RuntimeError")
        stalling_runners.FAILED = asyncio.Event()
        clock.advance(engine.RESTART_DELAY_S)  # restarted, it fails again; in between: ready
        await asyncio.wait_for(stalling_runners.FAILED.wait(), 10)
        assert stalling_runners.RUNS >= 2
        stop.set()
        await asyncio.wait_for(run, 10)


async def test_readyz_fails_while_a_runner_blocks_the_event_loop(resources_for, engine_health):
    async with resources_for() as resources:
        figures = engine.watch(resources=resources, health=engine_health, loop_stall_s=0.5)
        with ops.OpsServer(health=engine_health, collectors=[figures]) as server:
            answers: list[httpx.Response] = []
            release = threading.Event()

            def probe() -> None:
                try:
                    answers.append(httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=10))
                finally:
                    release.set()

            async def blocking_runner() -> None:
                # a synchronous call where an await belonged: every task of the engine waits
                threading.Thread(target=probe).start()
                release.wait(30)

            await blocking_runner()
            (answer,) = answers
            assert answer.status_code == 503
            (problem,) = answer.json()["problems"]
            assert problem.startswith("event loop: the event loop has not answered for")
            async with httpx.AsyncClient(timeout=10) as client:  # unblocked: ready again
                ready = await client.get(f"http://127.0.0.1:{server.port}/readyz")
            assert ready.status_code == 200
