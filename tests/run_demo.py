#!/usr/bin/env python3
"""make run: nginx + gcrelay on 127.0.0.1 with a demo config and the
Emarsys and Yotpo simulators, until Ctrl-C.  Everything lives in run/
(ignored by git) and is made afresh each time: new webhook secret, admin
key and encryption key."""

import argparse
import os
import shutil
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--port", type=int, default=8080)
    a = ap.parse_args()
    os.environ["GCRELAY_BUILD"] = os.path.abspath(a.build)
    import stack
    run_dir = os.path.join(ROOT, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    s = stack.Stack(base_dir=run_dir, port=a.port, workers=2,
                    budget_ms=20000, retry_schedule="[30, 120, 600]",
                    reconcile_after_s=10)
    os.chmod(run_dir, 0o755)
    s.demo_brand("acme", yotpo=True)
    ctl_conf = os.path.join(run_dir, "gcrelayctl.conf")
    with open(ctl_conf, "w") as f:
        f.write('url = "http://127.0.0.1:%d";\nkey_id = "%s";\n'
                'secret = "%s";\n' % (a.port, stack.ADMIN_WRITE[0],
                                      stack.ADMIN_WRITE[1]))
    os.chmod(ctl_conf, 0o600)
    ctl = os.path.relpath(os.path.join(a.build, "gcrelayctl"), ROOT)
    base = "http://127.0.0.1:%d" % a.port
    print("""
gcrelay is running behind nginx (Ctrl-C stops everything).

  webhook intake   %(base)s/v1/events
  admin API        %(base)s/admin/v1/brands
  health, metrics  %(base)s/healthz  %(base)s/metrics
  config           %(conf)s
  logs             %(log)s
  Emarsys sim      https://127.0.0.1:%(em)d/_sim/state
  Yotpo sim        https://127.0.0.1:%(yo)d/_sim/state  (CA: %(ca)s)

List the brands (a demo brand "acme" points at the simulators):

  %(ctl)s --config run/gcrelayctl.conf brands list

Send a signed test event, then look at it:

  %(ctl)s --config run/gcrelayctl.conf send-event --secret %(whsec)s tests/data/demo/offer_claimed.json
  %(ctl)s --config run/gcrelayctl.conf events list
  curl -s --cacert %(ca)s https://127.0.0.1:%(yo)d/_sim/state
""" % {"base": base, "conf": os.path.relpath(s.config_path, ROOT),
       "log": os.path.relpath(s.log_path, ROOT), "em": s.emarsys_port,
       "yo": s.yotpo_port, "ca": os.path.relpath(s.certs["ca"], ROOT),
       "ctl": ctl, "whsec": s.webhook_secrets[0]}, flush=True)
    stopping = []

    def stop(*_):
        stopping.append(1)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            if s.gcrelay.poll() is not None:
                print("gcrelay exited with %d; see %s" % (
                    s.gcrelay.returncode, s.log_path))
                break
            time.sleep(0.5)
    finally:
        print("\nstopping...", flush=True)
        os.environ["GCRELAY_KEEP"] = "1"
        s.close()
        print("stopped; run/ keeps the config, store and logs.")


if __name__ == "__main__":
    main()
