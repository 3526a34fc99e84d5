"""One module per scenario of the generator: publish, delivery, query, hold and sweep.

Each `run_*` coroutine is bounded by construction (a fixed event or query count and a deadline
of duration + drain) and returns a typed result from loadtest.results.
"""
