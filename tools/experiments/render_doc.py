#!/usr/bin/env python3
"""Writes docs/experiments.md from tools/experiments/experiments.md.in and
the experiments' outputs in docs/experiments/ (run_all.py calls it last):
`{{NAME|FIGURE}}` becomes figure FIGURE of docs/experiments/NAME.json, the
*_TABLE / *_SIZES / *_BYTES markers the middlebox tables from their CSV,
and each section gets the mode and command that produced its figures. A
figure that is missing (its experiment not run or failed) is shown as
"(not run)", never left out silently."""
import csv
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def load(out):
    summaries = {}
    for p in sorted(out.glob("*.json")):
        s = json.loads(p.read_text())
        summaries[s["experiment"]] = s
    return summaries


def host_load(info):
    """The host's load average during a run, as its JSON recorded it."""
    h = info.get("host load")
    if not h:
        return "host load not recorded (run before the scripts recorded it)"
    start, end = h["start"], h.get("end", {})
    started = f"started {info['started']}, " if info.get("started") else ""
    return (f"{started}host load average (1 min) {start['1 min']} at the start, {end.get('1 min', '?')} "
            f"at the end, 15 min {end.get('15 min', '?')}, on {start['cpus']} CPUs")


def fmt(v):
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def table(path, first=7):
    if not path.exists():
        return "(not run)"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in body:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    return "\n".join(lines)


def render(out=ROOT / "docs" / "experiments", template=HERE / "experiments.md.in",
           target=ROOT / "docs" / "experiments.md"):
    s = load(out)
    text = template.read_text()

    def figure(m):
        name, key = m.group(1), m.group(2)
        v = s.get(name, {}).get("figures", {}).get(key)
        return "(not run)" if v is None else fmt(v)

    text = re.sub(r"\{\{(\w+)\|([^}]+)\}\}", figure, text)
    text = text.replace("MIDDLEBOX_DNS_TABLE", table(out / "middlebox_dns.csv"))
    text = text.replace("MIDDLEBOX_DNS_SIZES", table(out / "middlebox_dns-endsize.csv"))
    text = text.replace("MIDDLEBOX_DNS_GATEWAY", table(out / "middlebox_dns-gateway.csv"))
    text = text.replace("MIDDLEBOX_HTTP_TABLE", table(out / "middlebox_http.csv"))
    sizes = [f"{k.split(':')[0]} {v}" for k, v in s.get("middlebox_http", {}).get("figures", {}).items()
             if "bytes on the wire" in k]
    text = text.replace("MIDDLEBOX_HTTP_BYTES", ", ".join(sizes) or "(not run)")
    # under each section's plot: how its figures were made
    def provenance(m):
        name = m.group(2)
        info = s.get(name)
        if not info:
            return m.group(0) + "\n\n*(not run)*"
        partial = ""
        if info.get("complete") is False:
            f = info["figures"]
            partial = f", stopped after {f.get('trials')} of {f.get('trials asked')} trials"
        # Where a run wrote its files (--out) changes none of its figures,
        # and this page shows them from docs/experiments/: not repeated.
        command = re.sub(r" --out \S+", "", info["command"])
        return (m.group(0) + f"\n\n*{info['mode']} run{partial}, finished {info['finished']}: "
                f"`sudo {command}`; {host_load(info)}*")
    text = re.sub(r"!\[[^\]]*\]\(experiments/(([a-z_]+))\.png\)", provenance, text)
    target.write_text(text)
    return target


if __name__ == "__main__":
    print(render(*[pathlib.Path(a) for a in sys.argv[1:]]))
