"""The darknet training farm: the domain library (no Celery in here; see workers/)."""
__version__ = "0.1.0"
