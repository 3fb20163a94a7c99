"""``python -m registry``: same as the ``mcp-mesh-registry`` console script."""

import sys

from registry.cli import main

sys.exit(main())
