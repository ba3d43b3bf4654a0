"""``python -m geofence``: the same as the ``geofence`` command."""

from .cli import main

raise SystemExit(main())
