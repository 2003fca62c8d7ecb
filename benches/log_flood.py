"""Init/done churn of fresh 1000-byte ids from one client, 4 connections, for N seconds."""
import http.client, sys, threading, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
stop = time.time() + secs
counts = [0] * 4
def run(t):
    c = http.client.HTTPConnection(host, port)
    n = 0
    while time.time() < stop:
        app = ("x" * 990) + f"{t}-{n:08d}"
        for path in (f"/hb_init?1000&appid={app}", f"/hb_done?appid={app}"):
            c.request("GET", path)
            c.getresponse().read()
        n += 1
    counts[t] = n
ts = [threading.Thread(target=run, args=(t,)) for t in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("init/done pairs:", sum(counts))
