"""The Celery edge of the farm: the app, thin tasks, the `farm` command, the embedded farm."""
