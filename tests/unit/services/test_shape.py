"""The shape `up` runs when not told: one worker per core, two instances from two cores on."""

from __future__ import annotations

import pytest

from cluster.services.shape import Shape, choose_shape, default_shape, usable_cores


@pytest.mark.parametrize(
    ("cores", "shape"),
    [(1, Shape(1, 1)), (2, Shape(2, 1)), (3, Shape(2, 1)), (4, Shape(2, 2)), (16, Shape(2, 8))],
)
def test_one_worker_per_core_and_two_instances_when_possible(cores: int, shape: Shape) -> None:
    assert default_shape(cores) == shape
    assert shape.instances * shape.workers <= cores


def test_what_the_operator_asks_for_wins_and_the_rest_comes_from_the_cores() -> None:
    assert choose_shape(4, None, cores=8) == Shape(4, 2)
    assert choose_shape(None, 5, cores=8) == Shape(2, 5)
    assert choose_shape(1, 1, cores=8) == Shape(1, 1)


def test_usable_cores_is_at_least_one() -> None:
    assert usable_cores() >= 1
