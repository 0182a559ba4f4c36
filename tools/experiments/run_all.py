#!/usr/bin/env python3
"""Runs the dissertation's experiments, one script each (see
docs/experiments.md), writing CSV, PNG and JSON into docs/experiments/.

  sudo .venv/bin/python tools/experiments/run_all.py --quick       # what docs/experiments.md shows
  sudo .venv/bin/python tools/experiments/run_all.py               # full sizes (3 GB, 15 trials: hours)
  sudo .venv/bin/python tools/experiments/run_all.py --only dns_overhead attach

Needs root (network namespaces, tc, tcpdump), the release binaries
(cargo build --release -p l45-agent -p l45-nco -p l45-tap-preload
-p l45-modules --bins, or L45_AGENT/L45_PRELOAD/L45_NCO/L45_DISSECTOR) and
tools/install-deps.sh's packages. Every experiment runs even if an earlier
one failed; the exit status says whether all succeeded. Without --out it
ends by writing docs/experiments.md (render_doc.py) from what is in
docs/experiments/."""
import argparse
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# In the order of the dissertation's claims: overhead, lifecycle, security,
# middleboxes, then scale and the two-device rotation; then the rotations
# under impairment, and the kernel tap (in the qemu VM): overhead, then lifecycle.
EXPERIMENTS = ["dns_overhead", "http_overhead", "attach", "activate", "deprecate", "rotation_single",
               "challenge", "dissector", "middlebox_dns", "middlebox_http", "distribution", "rotation_two",
               "rotation_single_impaired", "rotation_two_impaired", "kernel_overhead",
               "kernel_lifecycle"]
# Experiments that are another script run with options: name → (script, options).
VARIANTS = {
    "rotation_single_impaired": ("rotation_single", ["--impair", "--overlap", "none", "until-idle"]),
    "rotation_two_impaired": ("rotation_two", ["--impair", "--overlap", "none", "2s"]),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes and few trials")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes: only checks the scripts run")
    ap.add_argument("--only", nargs="+", choices=EXPERIMENTS, metavar="NAME", help="run only these")
    ap.add_argument("--out", type=pathlib.Path, help="output directory (default docs/experiments)")
    args = ap.parse_args()
    flags = ["--quick"] if args.quick else ["--smoke"] if args.smoke else []
    if args.out:
        flags += ["--out", str(args.out)]
    failed = []
    for name in args.only or EXPERIMENTS:
        print(f"\n===== {name} {' '.join(flags)}", flush=True)
        t0 = time.monotonic()
        script, options = VARIANTS.get(name, (name, []))
        p = subprocess.run([sys.executable, str(HERE / f"{script}.py"), *options, *flags])
        print(f"===== {name}: {'ok' if p.returncode == 0 else f'FAILED ({p.returncode})'} "
              f"in {time.monotonic() - t0:.0f} s", flush=True)
        if p.returncode != 0:
            failed.append(name)
    if not args.out:
        # docs/experiments.md from its template and whatever is in docs/experiments/
        sys.path.insert(0, str(HERE))
        import render_doc
        print(f"\nwrote {render_doc.render()}")
    if failed:
        print(f"\nfailed: {' '.join(failed)}")
        return 1
    print("\nall experiments done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
