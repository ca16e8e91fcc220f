"""Worker tuning from the environment: the values reach the Worker, bad ones are refused by name."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from temporalio.worker import PollerBehaviorSimpleMaximum

from infra.config import ConfigError, load_settings
from worker import tune_garbage_collector, worker_options


def test_defaults_are_the_measured_ones() -> None:
    settings = load_settings({})
    assert worker_options(settings) == {
        "max_cached_workflows": 1000,
        "max_concurrent_workflow_tasks": 100,
        "max_concurrent_activities": 100,
        "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(5),
        "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(5),
    }
    assert settings.database_pool_size == 10
    assert settings.worker_gc_threshold == 2000


def test_the_environment_sets_every_tuning_value() -> None:
    settings = load_settings({
        "WORKER_MAX_CACHED_WORKFLOWS": "250", "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "20",
        "WORKER_MAX_CONCURRENT_ACTIVITIES": "10", "WORKER_WORKFLOW_POLLERS": "2",
        "WORKER_ACTIVITY_POLLERS": "3", "DATABASE_POOL_SIZE": "4", "WORKER_GC_THRESHOLD": "5000",
    })
    assert worker_options(settings) == {
        "max_cached_workflows": 250,
        "max_concurrent_workflow_tasks": 20,
        "max_concurrent_activities": 10,
        "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(2),
        "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(3),
    }
    assert settings.database_pool_size == 4
    assert settings.worker_gc_threshold == 5000


@pytest.mark.parametrize(("name", "value", "says"), [
    ("WORKER_MAX_CACHED_WORKFLOWS", "lots", "is not a whole number"),
    ("WORKER_MAX_CONCURRENT_ACTIVITIES", "0", "too small (at least 1)"),
    ("WORKER_WORKFLOW_POLLERS", "1", "too small (at least 2)"),
    ("DATABASE_POOL_SIZE", "-3", "too small (at least 1)"),
    ("WORKER_GC_THRESHOLD", "0", "too small (at least 100)"),
])
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({name: value})
    assert str(refused.value).startswith(f"{name}: ") and says in str(refused.value)


@pytest.fixture
def garbage_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("garbage_collector")
def test_the_worker_freezes_what_start_up_made_and_collects_at_its_threshold() -> None:
    made_at_start_up = [object()]  # a container the collector tracks, alive for the worker's life
    assert any(o is made_at_start_up for o in gc.get_objects())

    class Garbage:
        pass
    left_over = Garbage()
    left_over.cycle = left_over  # type: ignore[attr-defined]  # start-up's garbage: only a collection frees it
    gone = weakref.ref(left_over)
    del left_over
    gc.disable()  # no collection of its own between here and the tuning
    try:
        tune_garbage_collector(load_settings({"WORKER_GC_THRESHOLD": "3000"}))
    finally:
        gc.enable()
    assert gone() is None  # collected first, not frozen for the worker's life
    assert gc.get_threshold() == (3000, 10, 100)
    # Frozen: no collection walks it again (gc.get_objects lists what the collections walk).
    assert not any(o is made_at_start_up for o in gc.get_objects())
    made_later = [object()]
    assert any(o is made_later for o in gc.get_objects())
