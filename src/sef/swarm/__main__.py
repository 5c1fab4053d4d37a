"""``python -m sef.swarm CONFIG_JSON``: one swarm worker process (started by the runner)."""

import sys

from sef.swarm._worker import main

sys.exit(main(sys.argv[1:]))
