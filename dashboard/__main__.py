"""`python -m dashboard`: the farm board, with settings from FARM_* (farm.settings)."""
from __future__ import annotations

import sys

from dashboard.app import serve
from farm import settings as farm_settings
from farm.errors import FarmError


def main() -> int:
    try:
        return serve(farm_settings.load())
    except FarmError as e:
        print(f"farm board: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
