"""Writes its arguments after the first, as a JSON list, to the file the first one names."""

import json
import sys

with open(sys.argv[1], "w") as out:
    json.dump(sys.argv[2:], out)
