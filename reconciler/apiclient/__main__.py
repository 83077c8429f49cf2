"""``python -m reconciler.apiclient``."""

import sys

from reconciler.apiclient.cli import main

sys.exit(main())
