"""Compact, standard JSON for everything the hub writes: frames, bodies, stored rows.

``json.dumps`` with any option builds a new encoder per call, which showed up
as a fifth of the IOLoop's time in the throughput profile; one encoder is
built here, once. ``allow_nan=False``: the hub never emits ``NaN`` or
``Infinity``, which are not JSON (``json_input`` refuses them on the way in).
"""

import json

dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
