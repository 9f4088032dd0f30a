"""``python -m agentcom``: the token command line (see ``agentcom.cli``)."""

import sys

from agentcom.cli import main

sys.exit(main())
