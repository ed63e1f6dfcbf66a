"""A lean launcher the harness talks to over pipes: runs one command per request line and
answers with its wall time and peak RSS.

Linux charges a child's peak RSS with the memory of the process that forked it (exec keeps
the old address space's high-water mark), so the harness, which has DuckDB loaded, would
add its own ~100 MB to every figure. Forked from this small interpreter instead (started
with -I -S, only os/sys/json/time loaded), the overhead is below a bare `python -c pass`.
"""

import json
import os
import sys
import time

for line in sys.stdin:
    req = json.loads(line)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(err, 2)
            os.chdir(req["cwd"])
            os.execve(req["argv"][0], req["argv"], req["env"])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    os.close(err)
    answer = {
        "wall": wall,
        "maxrss_kib": usage.ru_maxrss,
        "exit": os.waitstatus_to_exitcode(status),
    }
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
