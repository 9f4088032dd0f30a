"""``python -m agentcom``: the command line, as the ``agentcom`` script (see ``agentcom.cli``)."""

import sys

from agentcom.cli import main

sys.exit(main())
