"""A flood from one source while a customer places calls: what it costs the switch.

    python benches/flood.py                       # 5,000 INVITE/s for 20 s, 10 calls/s
    python benches/flood.py --rate 5000 --seconds 20 --calls-per-second 10

Three runs, each with a fresh ``softswitch run`` (one customer on 127.0.0.1, one SIPp carrier):

* ``control``: the customer's calls alone, to know what they cost;
* ``pike``: the default ``[security]``: the flooding source is blocked by pike after
  ``pike_rate`` requests in a second, and its packets are then dropped unparsed;
* ``stateless``: ``pike_rate = 0``: every flood INVITE is parsed and answered with one
  stateless 403 (the cost of a stranger the switch cannot block: a spoofed-source flood).

For each: the customer's calls that succeeded, the responses the flooder got, the switch's
CPU (from /proc) and its CPU per flood packet beyond the control run, and its resident
memory before, at peak and after. Loopback only, bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests"))  # loopback_ports, which the harness uses

from attack import process_cpu, process_rss, switch_config  # noqa: E402
from callflow_harness import LOCAL, Sipp, Switch, free_port, scenario  # noqa: E402

ATTACKER = "127.0.0.3"
NUMBER = "441234567"


def run(label: str, security: str, args: argparse.Namespace, flood: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"flood_{label}_") as tmp:
        workdir = Path(tmp)
        port, gateway_port = free_port(), free_port()
        path = switch_config(workdir, port, gateway_port, security)
        switch = Switch(path, workdir / "cdr.sqlite", port, workdir / "switch.log").start()
        assert switch.process is not None
        pid = switch.process.pid
        calls = args.calls_per_second * int(args.seconds)
        sipps: list[Sipp] = []
        try:
            carrier = Sipp(
                workdir,
                "carrier",
                scenario("uas_answer", workdir),
                calls=calls,
                timeout=120,
                port=gateway_port,
            ).start()
            sipps.append(carrier)
            time.sleep(0.5)
            rss_before, cpu_before = process_rss(pid), process_cpu(pid)
            customer = Sipp(
                workdir,
                "customer",
                scenario("uac_call", workdir),
                args=[
                    "-s",
                    NUMBER,
                    "-r",
                    str(args.calls_per_second),
                    "-d",
                    "500",
                    "-buff_size",
                    "4194304",
                    "-trace_stat",
                    "-stf",
                    str(workdir / "stat.csv"),
                ],
                calls=calls,
                timeout=120,
            ).start(f"{LOCAL}:{port}")
            sipps.append(customer)
            attacker = None
            out = workdir / "flood.json"
            if flood:
                attacker = subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "tests" / "e2e" / "attack.py"),
                        "--source",
                        ATTACKER,
                        "--target",
                        f"{LOCAL}:{port}",
                        "--rate",
                        str(args.rate),
                        "--seconds",
                        str(args.seconds),
                        "--out",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            rss_peak = rss_before
            while customer.process is not None and customer.process.poll() is None:
                rss_peak = max(rss_peak, process_rss(pid))
                time.sleep(0.5)
            if attacker is not None:
                attacker.wait(timeout=args.seconds + 30)
            cpu = process_cpu(pid) - cpu_before
            time.sleep(2.0)
            rss_after = process_rss(pid)
            result = json.loads(out.read_text()) if flood else {"sent": 0, "responses": {}}
            ok = customer.process.returncode == 0 if customer.process else False
            stats = (workdir / "stat.csv").read_text().splitlines()
            header, last = stats[0].split(";"), stats[-1].split(";")
            successful = int(last[header.index("SuccessfulCall(C)")])
        finally:
            for sipp in sipps:
                sipp.stop()
            switch.stop()
    return {
        "run": label,
        "calls": calls,
        "successful": successful,
        "sipp_ok": ok,
        "flood_sent": result["sent"],
        "flood_responses": result["responses"],
        "cpu_s": round(cpu, 3),
        "rss_mib": [rss_before >> 20, rss_peak >> 20, rss_after >> 20],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000, help="flood INVITEs per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--calls-per-second", type=int, default=10)
    args = parser.parse_args(argv)
    control = run("control", "", args, flood=False)
    runs = [
        control,
        run("pike", "", args, flood=True),
        run("stateless", "pike_rate = 0", args, flood=True),
    ]
    print()
    print(
        f"{'run':>10} {'calls ok':>12} {'flood sent':>10} {'answers':>16} {'CPU s':>7} "
        f"{'us/packet':>9} {'RSS MiB before/peak/after':>26}"
    )
    for r in runs:
        sent = int(r["flood_sent"])  # type: ignore[call-overload]
        extra = float(r["cpu_s"]) - float(control["cpu_s"])  # type: ignore[arg-type]
        per_packet = f"{extra / sent * 1e6:.1f}" if sent else "-"
        answers = ",".join(f"{k}x{v}" for k, v in r["flood_responses"].items()) or "none"  # type: ignore[attr-defined]
        rss = "/".join(map(str, r["rss_mib"]))  # type: ignore[call-overload]
        print(
            f"{r['run']:>10} {r['successful']:>5}/{r['calls']:<6} {sent:>10} {answers:>16} "
            f"{r['cpu_s']:>7} {per_packet:>9} {rss:>26}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
