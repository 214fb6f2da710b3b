"""What the reliability modules count: printed, and appended to a log.

Set `KERAS_VAE_RELIABILITY_LOG=/path/to/log.jsonl` to collect one JSON
line per module (the figures of the README's reliability section).
"""

import json
import os


def report(module, **counts):
    """Print `counts` for `module` and append them to the JSON-lines log."""
    print(f"\nreliability {module}: {counts}")
    log = os.environ.get("KERAS_VAE_RELIABILITY_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps({"module": module, **counts}) + "\n")
