#!/usr/bin/env python3
"""Run a command; print its wall time and its own peak RSS (not its children's) as JSON."""
import json
import os
import subprocess
import sys
import time

start = time.monotonic()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
wall = time.monotonic() - start
print(json.dumps({"wall_s": round(wall, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                  "exit": os.waitstatus_to_exitcode(status)}))
