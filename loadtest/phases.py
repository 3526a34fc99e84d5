"""The bench's phases in the order they run, each one generator subprocess (or in process).

Order matters: queries run on exactly the filled events (before publishing adds its own), held
connections before the publishing scenarios (so their memory growth is measured on workers that
have not served load yet), EXPLAIN again once publishing has added recent events.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from loadtest import bench_matching
from loadtest.channels import open_channels
from loadtest.explain import explain_shapes
from loadtest.files import FillManifest, read_channels, write_json
from loadtest.fill import count_events, fill, prewarm
from loadtest.histograms import scrape, summary_between
from loadtest.locust_run import run_locust
from loadtest.notes import interpretation_notes, rss_per_thousand
from loadtest.plan import Plan
from loadtest.progress import log
from loadtest.pyspy import run_profile
from loadtest.record import BenchResults
from loadtest.results import DeliveryResult, HoldResult, PublishResult, QueryResult, SweepResult
from loadtest.runs import run_generator
from loadtest.sustained import rss_of_trees, soak
from loadtest.targets import Target


def bounded(seconds: float) -> float:
    """A subprocess timeout for a phase of `seconds`: generous, but never unbounded."""
    return seconds * 2 + 180


class Phases:
    """One bench run's phases over a target; results accumulate in `results`."""

    def __init__(
        self, target: Target, plan: Plan, work: Path, metrics_urls: list[str], results: BenchResults
    ) -> None:
        self.target = target
        self.plan = plan
        self.work = work
        self.metrics_urls = metrics_urls
        self.results = results
        self.url = target.url
        self.manifest_path = (target.data_dir or work) / "fill-manifest.json"
        self.manifest: FillManifest | None = None
        self.channels_path: Path | None = None

    def note(self, text: str) -> None:
        self.results.notes.append(text)

    def fill(self) -> None:
        if self.target.database_url:
            self.manifest = fill(self.target.database_url, self.plan.fill, self.manifest_path)
            self.results.fill = self.manifest
            self.results.prewarm = prewarm(self.target.database_url)
        else:
            self.note(
                "No database URL: the fill, EXPLAIN and the query shapes' values were skipped."
            )

    def channels(self, skip: set[str]) -> None:
        target, plan = self.target, self.plan
        paid_possible = bool(target.paid_kind and target.ledger_url and target.ledger_token)
        if paid_possible and not {"paid", "locust"} <= skip:
            count = plan.paid_connections * plan.channels_per_connection + plan.locust_paid_users
            log(f"opening {count} payment channels on {target.ledger_url}")
            self.channels_path = self.work / "channels.json"
            open_channels(target, count, self.channels_path)
        elif "paid" not in skip:
            self.note("No ledger or priced kind known: the paid scenario was skipped.")

    def _query_args(self, rate: float, duration: float, *extra: str) -> list[str]:
        args = ["query", "--url", self.url, "--rate", str(rate), "--duration", str(duration),
                "--connections", str(self.plan.query_connections), *extra]  # fmt: skip
        if self.manifest is not None:
            args += ["--manifest", str(self.manifest_path)]
        return args

    def query(self, rate: float, duration: float, name: str) -> QueryResult:
        before = scrape(self.metrics_urls)
        args = self._query_args(rate, duration)
        r = run_generator(args, self.work, name, bounded(duration), QueryResult)
        after = scrape(self.metrics_urls)
        r.relay_db_query = {
            labels: summary_between(before, after, metric, labels)
            for (metric, labels) in after
            if metric == "relay_db_query_seconds"
        }
        return r

    def queries(self) -> None:
        # Unreported warm-up on other values (another seed), as before the publishing phases:
        # fresh workers have cold code paths, no prepared statements and new backends.
        plan = self.plan
        warmup = self._query_args(plan.query_rate * 2, plan.warmup_seconds, "--seed", "7")
        self.results.query_warmup = run_generator(
            warmup, self.work, "query_warmup", bounded(5), QueryResult
        )
        self.results.query = self.query(plan.query_rate, plan.query_duration, "query")
        self.results.query_load = self.query(
            plan.query_load_rate, plan.query_load_duration, "query_load"
        )

    def explain(self) -> bool:
        """EXPLAIN (ANALYZE) of every shape; False when there is nothing to explain."""
        if not self.target.database_url or self.manifest is None:
            return False
        log("EXPLAIN (ANALYZE) of every query shape")
        self.results.explain = explain_shapes(self.target.database_url, self.manifest)
        return True

    def hold(self, name: str, connections: int, subs: int, hold_s: float, live: bool,
             to: str | None = None) -> HoldResult:  # fmt: skip
        plan = self.plan
        args = ["hold", "--url", to or self.url, "--connections", str(connections),
                "--subs", str(subs), "--hold", str(hold_s)]  # fmt: skip
        if live:
            args += ["--live-rate", str(plan.live_rate), "--live-duration",
                     str(plan.live_duration), "--live-subscribers", str(plan.live_subscribers),
                     "--live-fanout", str(plan.live_fanout)]  # fmt: skip
        for watched, pids in self.target.watch.items():
            args += ["--watch", f"{watched}={','.join(str(p) for p in pids)}"]
        for instance in self.metrics_urls:
            args += ["--health", instance]
        timeout = bounded(hold_s + plan.live_duration + 150)
        r = run_generator(args, self.work, name, timeout, HoldResult)
        r.rss_per_1000 = rss_per_thousand(r)
        return r

    def connections(self) -> None:
        plan, target = self.plan, self.target
        r = self.hold(
            "connections", plan.hold_connections, plan.hold_subs, plan.hold_seconds, False
        )
        self.results.connections = r
        short = r.opened < plan.hold_connections
        if short and target.instance_urls and target.instance_urls != [self.url]:
            # Fewer than asked got through nginx: is it nginx or the relay? Ask the relay.
            self.results.connections_direct = self.hold(
                "connections_direct", plan.hold_connections, plan.hold_subs,
                plan.hold_seconds, False, ",".join(target.instance_urls),
            )  # fmt: skip
        nginx_log = (target.data_dir / "nginx" / "error.log") if target.data_dir else None
        if short and nginx_log is not None and nginx_log.exists():
            text = nginx_log.read_text(errors="replace")
            match = re.search(r"(\d+) worker_connections are not enough", text)
            if match:
                self.note(
                    f"nginx logged `{match.group(0)}` while {plan.hold_connections:,} "
                    "connections were opened: `worker_connections` counts the client side and "
                    "the upstream side of every proxied WebSocket, so one nginx worker process "
                    f"holds at most about {int(match.group(1)) // 2:,} WebSockets. More worker "
                    "processes (or a higher worker_connections) in the nginx template would "
                    "lift this; the relay itself is measured without nginx in the row below it."
                )

    def publish(self, name: str, rate: float, duration: float, *extra: str) -> PublishResult:
        args = ["publish", "--url", self.url, "--rate", str(rate), "--duration", str(duration),
                "--connections", str(self.plan.accept_connections), *extra]  # fmt: skip
        return run_generator(args, self.work, name, bounded(duration), PublishResult)

    def accept(self) -> None:
        plan, drain = self.plan, ["--drain", str(self.plan.drain)]
        self.results.warmup = self.publish(
            "warmup", min(200.0, plan.accept_rate), plan.warmup_seconds, *drain
        )
        before = scrape(self.metrics_urls)
        r = self.publish("accept", plan.accept_rate, plan.accept_duration, *drain)
        after = scrape(self.metrics_urls)
        r.relay_histogram = summary_between(before, after, "relay_event_acceptance_seconds")
        self.results.accept = r

    def sustained(self) -> None:
        """The issue's throughput targets: 3,000 ev/s held for a minute, then 5,000 ev/s."""
        plan, drain = self.plan, ["--drain", str(self.plan.drain)]
        self.results.sustained = self.publish(
            "sustained", plan.sustained_rate, plan.sustained_duration, *drain
        )

    def peak(self) -> None:
        plan, drain = self.plan, ["--drain", str(self.plan.drain)]
        self.results.peak = self.publish("peak", plan.peak_rate, plan.peak_duration, *drain)

    def soak(self) -> None:
        """Minutes of constant load in windows, the relay's RSS after each (flat memory)."""
        plan = self.plan
        pids = [pid for name, tree in self.target.watch.items()
                if name.startswith("instance-") for pid in tree]  # fmt: skip
        self.results.soak = soak(
            self.url, plan.soak_rate, plan.soak_minutes, plan.soak_window, self.work,
            rss_of_trees(pids), connections=plan.accept_connections,
        )  # fmt: skip

    def paid(self, channels_path: Path) -> None:
        plan = self.plan
        split = self.work / "channels-generator.json"
        data = read_channels(channels_path)
        mine = data.channels[: plan.paid_connections * plan.channels_per_connection]
        write_json(split, msgspec.structs.replace(data, channels=mine))
        before = scrape(self.metrics_urls)
        args = ["publish", "--url", self.url, "--rate", str(plan.paid_rate), "--duration",
                str(plan.paid_duration), "--connections", str(plan.paid_connections),
                "--channels", str(split), "--drain", str(plan.drain)]  # fmt: skip
        r = run_generator(args, self.work, "paid", bounded(plan.paid_duration), PublishResult)
        after = scrape(self.metrics_urls)
        r.relay_histogram = summary_between(before, after, "relay_payment_verification_seconds")
        self.results.paid = r

    def delivery(self, name: str, rate: float, duration: float, fanout: int,
                 *extra: str) -> DeliveryResult:  # fmt: skip
        plan = self.plan
        args = ["delivery", "--url", self.url, "--rate", str(rate), "--duration", str(duration),
                "--subscribers", str(plan.delivery_subscribers), "--fanout", str(fanout),
                *extra]  # fmt: skip
        return run_generator(args, self.work, name, bounded(duration), DeliveryResult)

    def deliveries(self, skip: set[str]) -> None:
        plan = self.plan
        if "delivery" not in skip:
            before = scrape(self.metrics_urls)
            r = self.delivery("delivery", plan.delivery_rate, plan.delivery_duration,
                              plan.delivery_fanout)  # fmt: skip
            after = scrape(self.metrics_urls)
            r.relay_delivery_lag = summary_between(before, after, "relay_delivery_lag_seconds")
            self.results.delivery = r
        if "broadcast" not in skip:
            self.results.broadcast = self.delivery(
                "broadcast", plan.broadcast_rate, plan.broadcast_duration,
                plan.delivery_subscribers, "--publishers", "2",
            )  # fmt: skip

    def sweep(self) -> None:
        plan = self.plan
        args = ["sweep", "--url", self.url, "--rates", ",".join(f"{r:g}" for r in plan.sweep_rates),
                "--duration", str(plan.sweep_duration), "--pause", str(plan.sweep_pause),
                "--connections", str(plan.accept_connections)]  # fmt: skip
        timeout = bounded(plan.sweep_duration * len(plan.sweep_rates) + 60)
        self.results.sweep = run_generator(args, self.work, "sweep", timeout, SweepResult)

    def matching(self) -> None:
        """Subscription-index matching cost per event, in process (no sockets)."""
        log("subscription matching micro-benchmark (1k, 10k, 100k subscriptions)")
        small = self.plan.fill < 100_000  # --quick
        events = 300 if small else 2000
        sizes = (1_000, 10_000) if small else (1_000, 10_000, 100_000)
        self.results.matching = [bench_matching.bench(size, events, seed=1) for size in sizes]


def run_scenarios(
    target: Target,
    plan: Plan,
    skip: set[str],
    work: Path,
    metrics_urls: list[str],
    results: BenchResults,
) -> None:
    phases = Phases(target, plan, work, metrics_urls, results)
    if "fill" not in skip:
        phases.fill()
    phases.channels(skip)
    if "query" not in skip:
        phases.queries()
    explained = "explain" not in skip and phases.explain()
    if "connections" not in skip:
        phases.connections()
    if "subscriptions" not in skip:
        results.subscriptions = phases.hold(
            "subscriptions", plan.sub_connections, plan.subs_per_connection, 2, True
        )
    if "accept" not in skip:
        phases.accept()
    if "sustained" not in skip:
        phases.sustained()
    if "peak" not in skip:
        phases.peak()
    if "soak" not in skip:
        phases.soak()
    if "paid" not in skip and phases.channels_path is not None:
        phases.paid(phases.channels_path)
    phases.deliveries(skip)
    if "sweep" not in skip:
        phases.sweep()
    if "locust" not in skip:
        results.locust = run_locust(
            target, plan, work, phases.channels_path,
            phases.manifest_path if phases.manifest else None,
        )  # fmt: skip
    # EXPLAIN again: the same shapes after the publishing scenarios added recent events.
    if explained and results.accept is not None and target.database_url and phases.manifest:
        log("EXPLAIN (ANALYZE) again after publishing")
        results.explain_after = explain_shapes(target.database_url, phases.manifest)
        results.events_after = count_events(target.database_url)
    if "profile" not in skip:
        profile = run_profile(target, plan, work)
        if profile:
            results.profile = profile
            results.profile_rate = plan.accept_rate
        elif plan.profile_seconds > 0:
            phases.note("py-spy not found (pip install py-spy): no profile section.")
    if "matching" not in skip:
        phases.matching()
    results.notes.extend(interpretation_notes(results, plan))
