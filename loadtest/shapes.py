"""Which shape (instances x workers) serves best on this machine: the figures behind the default.

For each shape, a fresh `relay-cluster up` with nothing stored, then EVENT -> OK at each offered
rate through nginx (the same open-loop publish scenario as the bench's accept row). The bench
runs it as its last phase, after its own cluster has stopped, so the two never share the cores;
alone: `python -m loadtest.shapes --shapes 1x1,2x1,2x2 --rates 1000,2000,3000 --duration 20`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec

from cluster.services.shape import Shape, default_shape, usable_cores
from loadtest.errors import LoadTestError
from loadtest.files import DEFAULT_PAID_KIND, write_json
from loadtest.launch import BenchCluster, free_port
from loadtest.progress import log
from loadtest.results import PublishResult
from loadtest.runs import run_generator

CONNECTIONS = 50
DRAIN = 10.0


class ShapeRun(msgspec.Struct, kw_only=True):
    """One offered rate on one shape."""

    instances: int
    workers: int
    offered_rate: float
    achieved_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    machine_busy_cores: float | None
    generator_core_share: float


class ShapesResult(msgspec.Struct, kw_only=True):
    cores: int
    default: Shape
    duration_s: float
    connections: int
    runs: list[ShapeRun]
    failures: list[str] = []


def parse_shapes(text: str) -> list[Shape]:
    """`1x1,2x1` -> shapes; refuses anything else with a message that says the form."""
    shapes = []
    for part in text.split(","):
        instances, sep, workers = part.strip().partition("x")
        if not sep or not instances.isdigit() or not workers.isdigit():
            raise LoadTestError(f"shape {part!r} is not INSTANCESxWORKERS, e.g. 2x1")
        shapes.append(Shape(int(instances), int(workers)))
    return shapes


def run_shape(shape: Shape, rates: Sequence[float], duration: float, work: Path) -> list[ShapeRun]:
    cluster = BenchCluster(
        work / f"{shape.instances}x{shape.workers}",
        shape.instances,
        shape.workers,
        free_port(),
        DEFAULT_PAID_KIND,
    )
    runs = []
    try:
        target = cluster.start()
        for rate in rates:
            name = f"shape-{shape.instances}x{shape.workers}-{rate:g}"
            args = [
                *("publish", "--url", target.url, "--rate", str(rate)),
                *("--duration", str(duration), "--connections", str(CONNECTIONS)),
                *("--drain", str(DRAIN)),
            ]
            result = run_generator(args, work, name, duration * 2 + 180, PublishResult)
            latency = result.latency_ms
            runs.append(
                ShapeRun(
                    instances=shape.instances,
                    workers=shape.workers,
                    offered_rate=rate,
                    achieved_rate=result.achieved_rate,
                    p50_ms=latency.p50,
                    p95_ms=latency.p95,
                    p99_ms=latency.p99,
                    errors=result.error_count,
                    machine_busy_cores=result.machine.machine_busy_cores
                    if result.machine
                    else None,
                    generator_core_share=result.generator.core_share,
                )
            )
    finally:
        cluster.stop()
    return runs


def measure_shapes(
    shapes: Sequence[Shape], rates: Sequence[float], duration: float, work: Path
) -> ShapesResult:
    cores = usable_cores()
    result = ShapesResult(
        cores=cores,
        default=default_shape(cores),
        duration_s=duration,
        connections=CONNECTIONS,
        runs=[],
    )
    for shape in shapes:
        log(f"shape {shape}: rates {', '.join(f'{r:g}' for r in rates)}")
        try:
            result.runs.extend(run_shape(shape, rates, duration, work))
        except LoadTestError as exc:
            result.failures.append(f"{shape}: {exc}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1x1,1x2,2x1,2x2")
    parser.add_argument("--rates", default="1000,2000,3000")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="relay-shapes-") as work:
        result = measure_shapes(parse_shapes(args.shapes), rates, args.duration, Path(work))
    if args.json_out:
        write_json(args.json_out, result)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result)).decode() + "\n")
    return 0 if not result.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
