"""``python -m serve.server``: see ``serve.server.supervisor``."""
import sys

from serve.server.supervisor import main

sys.exit(main())
