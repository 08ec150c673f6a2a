"""`python -m steer.dashboards`: the same as `steer dash`."""

import sys

from steer.dashboards.server import main

sys.exit(main())
