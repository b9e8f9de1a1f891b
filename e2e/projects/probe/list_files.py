"""Writes {relative path: content} of every file under the first argument to the second."""

import json
import os
import sys

root = sys.argv[1]
found = {}
for folder, _, names in os.walk(root):
    for name in names:
        path = os.path.join(folder, name)
        with open(path) as f:
            found[os.path.relpath(path, root)] = f.read()
with open(sys.argv[2], "w") as out:
    json.dump({"root": os.path.basename(root.rstrip("/")), "files": found}, out)
