#!/usr/bin/env python3
"""Drive `mc serve` for bench/server.sh.

  server_load.py throughput URL TOKEN JOBS CLIENTS ISOLATION
      JOBS one-step `true` jobs, POSTed by CLIENTS threads; waits until all have ended. Prints
      JSON: wall time (first POST to last job's end), jobs/s, POST latency and POST->RUNNING
      latency percentiles, states.
  server_load.py touch URL TOKEN
      The requests a busy server answers (a listing page, a job, metrics), for the RSS figure.
"""
import datetime
import http.client
import json
import sys
import threading
import time
import urllib.parse


def connect(url):
    parsed = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)


def call(conn, method, path, token, body=None, content_type=None):
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def parse_at(text):
    # RFC 3339 with up to 9 fractional digits; Python takes 6.
    date, _, rest = text.rstrip("Z").partition("T")
    clock, _, fraction = rest.partition(".")
    fraction = (fraction + "000000")[:6]
    return datetime.datetime.fromisoformat(f"{date}T{clock}.{fraction}+00:00").timestamp()


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return values[index]


def throughput(url, token, jobs, clients, isolation):
    spec = json.dumps({
        "name": "bench",
        "isolation": isolation,
        "steps": [{"name": "s", "run": "true"}],
    }).encode()
    posted = {}  # job id -> wall time the POST was sent
    post_latency = []
    lock = threading.Lock()
    errors = []

    def client(count):
        conn = connect(url)
        for _ in range(count):
            sent = time.time()
            status, body = call(conn, "POST", "/v1/jobs", token, spec, "application/json")
            done = time.time()
            if status != 201:
                errors.append(f"{status} {body[:200]!r}")
                continue
            with lock:
                posted[json.loads(body)["job_id"]] = sent
                post_latency.append(done - sent)

    share = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]
    start = time.time()
    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        sys.exit(f"POST failed {len(errors)} times, first: {errors[0]}")
    # Until every job has ended: nothing queued, nothing running.
    conn = connect(url)
    while True:
        _, metrics = call(conn, "GET", "/v1/metrics", token)
        values = dict(
            line.split(" ", 1) for line in metrics.decode().splitlines()
            if line and not line.startswith("#")
        )
        if values["maestro_queue_depth"] == "0" and values["maestro_jobs_running"] == "0":
            break
        # Often enough that the polled end is within 50 ms of the real one.
        time.sleep(0.05)
    waited = time.time()
    to_running, ends, states = [], [], {}
    for job_id, sent in posted.items():
        _, body = call(conn, "GET", f"/v1/jobs/{job_id}", token)
        job = json.loads(body)
        states[job["state"]] = states.get(job["state"], 0) + 1
        for transition in job["transitions"]:
            if transition["state"] == "RUNNING":
                to_running.append(parse_at(transition["at"]) - sent)
        ends.append(parse_at(job["transitions"][-1]["at"]))
    wall = max(ends) - start
    print(json.dumps({
        "jobs": len(posted),
        "wall_s": round(wall, 2),
        "polled_wall_s": round(waited - start, 2),
        "jobs_per_s": round(len(posted) / wall, 1),
        "post_ms": {p: round(percentile(post_latency, p) * 1000, 1) for p in (50, 99)},
        "post_to_running_ms": {p: round(percentile(to_running, p) * 1000, 1) for p in (50, 99)},
        "states": states,
    }))


def touch(url, token):
    conn = connect(url)
    started = time.time()
    status, body = call(conn, "GET", "/v1/jobs?limit=500", token)
    assert status == 200, body
    first = json.loads(body)["jobs"][0]["job_id"]
    call(conn, "GET", f"/v1/jobs/{first}", token)
    call(conn, "GET", "/v1/metrics", token)
    print(json.dumps({"touch_s": round(time.time() - started, 2)}))


if __name__ == "__main__":
    if sys.argv[1] == "throughput":
        throughput(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        touch(sys.argv[2], sys.argv[3])
