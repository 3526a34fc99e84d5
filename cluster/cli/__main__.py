"""`python -m cluster.cli`: the same entry point as the `relay-cluster` script."""

import sys

from cluster.cli import main

sys.exit(main())
