"""The Celery edge of the farm: the app, thin tasks, the `farm` command, the embedded farm,
and the micro network the demo, the tests and the benchmarks train (micro.py)."""
