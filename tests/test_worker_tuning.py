"""Worker tuning from the environment: the values reach the Worker, bad ones are refused by name."""

from __future__ import annotations

import pytest
from temporalio.worker import PollerBehaviorSimpleMaximum

from infra.config import ConfigError, load_settings
from worker import worker_options


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


def test_the_environment_sets_every_tuning_value() -> None:
    settings = load_settings({
        "WORKER_MAX_CACHED_WORKFLOWS": "250", "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "20",
        "WORKER_MAX_CONCURRENT_ACTIVITIES": "10", "WORKER_WORKFLOW_POLLERS": "2",
        "WORKER_ACTIVITY_POLLERS": "3", "DATABASE_POOL_SIZE": "4",
    })
    assert worker_options(settings) == {
        "max_cached_workflows": 250,
        "max_concurrent_workflow_tasks": 20,
        "max_concurrent_activities": 10,
        "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(2),
        "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(3),
    }
    assert settings.database_pool_size == 4


@pytest.mark.parametrize(("name", "value", "says"), [
    ("WORKER_MAX_CACHED_WORKFLOWS", "lots", "is not a whole number"),
    ("WORKER_MAX_CONCURRENT_ACTIVITIES", "0", "too small (at least 1)"),
    ("WORKER_WORKFLOW_POLLERS", "1", "too small (at least 2)"),
    ("DATABASE_POOL_SIZE", "-3", "too small (at least 1)"),
])
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({name: value})
    assert str(refused.value).startswith(f"{name}: ") and says in str(refused.value)
