"""Compact JSON for everything the hub writes: frames, bodies, stored rows.

``json.dumps`` with any option builds a new encoder per call, which showed up
as a fifth of the IOLoop's time in the throughput profile; one encoder is
built here, once.
"""

import json

dumps = json.JSONEncoder(separators=(",", ":")).encode
