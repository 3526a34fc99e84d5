"""Load testing for the relay cluster.

- `loadtest/generator.py`: a lean asyncio (uvloop + aiohttp) open-loop generator: the headline
  figures (acceptance, payments, delivery, queries, held connections and subscriptions).
- `loadtest/locustfile.py`: locust users over WebSockets (websocket-client under gevent).
- `loadtest/bench.py`: `python -m loadtest.bench` starts a local cluster, fills it, runs the
  standard scenarios and writes docs/PERFORMANCE.md and docs/performance-latency.png.
- `loadtest/bench_matching.py`: micro-benchmark of the in-process subscription index.

Every tool refuses targets outside the loopback range: load goes to this machine only.
"""
