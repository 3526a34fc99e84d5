"""Load testing for the relay cluster: a package of nouns, every result a typed Struct.

Commands (each a module with a `main`):
- `python -m loadtest.generator <scenario>`: a lean asyncio (uvloop + aiohttp) open-loop
  generator for the headline figures; one JSON document per run (loadtest.results).
- `python -m loadtest.bench`: starts a cluster (loadtest.launch, over
  cluster.services.launcher), fills it, runs the standard scenarios and writes
  docs/PERFORMANCE.md and docs/performance-latency.png.
- `python -m loadtest.soak`, `python -m loadtest.cpu_per_event`, `python -m
  loadtest.bench_matching`, `locust -f loadtest/locustfile.py`.

The generator, read top to bottom: loopback (where load may go) → presign (events signed
ahead with cluster.nostr.signing.Signer) → clients (sockets and readers) → schedule (the open
loop) → trackers (answers matched to what was due) → stats → scenarios/ (publish, delivery,
query, hold, sweep) → results.

The bench: plan (sizes) → launch / targets (what it talks to) → fill → channels → phases (one
generator subprocess each: runs) with histograms (/metrics), machine, explain, locust_run and
pyspy beside them → record (all results) → report_rows / report / notes / plot.

Every tool refuses targets outside the loopback range: load goes to this machine only.
"""
