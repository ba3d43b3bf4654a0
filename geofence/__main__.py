"""``python -m geofence``: the same as the ``geofence`` command."""

from .cli.main import main

raise SystemExit(main())
