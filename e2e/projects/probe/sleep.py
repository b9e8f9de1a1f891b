"""Starts a grandchild, writes both process ids to the marker file, then waits (bounded)."""

import os
import subprocess
import sys
import time

grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
marker = sys.argv[1]
with open(marker + ".tmp", "w") as out:
    out.write(f"{os.getpid()} {grandchild.pid}")
os.rename(marker + ".tmp", marker)
time.sleep(300)
