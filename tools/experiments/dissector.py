#!/usr/bin/env python3
"""Figure 3.6: a middlebox's inverse module flags app-id-tagged DNS queries
among plain ones. The client host's device tags every UDP query that `dig`
sends to port 53 with an application-id tag (app-id-tag, label `l45`);
`host` (another DNS client on the same host) sends plain queries; dnsmasq on
the server host strips the tag (its device has the same module). A capture
on the server host's link is read by tshark with the Lua dissector that
`l45-dissector app-id-tag label=l45 --port 53` generates (the inverse
module): each tagged query is flagged with its application name, every
plain query and every reply goes to Wireshark's DNS dissector as usual.
Writes dissector.csv (tshark's view of every packet) and dissector.png."""
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import l45exp as x  # noqa: E402

PORT = 53
FIELDS = ["frame.number", "ip.src", "ip.dst", "l45_app_id.name", "l45_app_id.label", "dns.flags.response",
          "dns.qry.name"]


def main():
    args = x.parse_args(__doc__)
    rounds = x.pick(args, 20, 10, 3)
    out = x.Output("dissector", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bed = x.Testbed(work)
        dns = None
        try:
            dns, pcap = run(bed, work, rounds)
        finally:
            if dns:
                dns.stop()
            bed.close()
        rows = dissect(work, pcap)
    out.csv(FIELDS + ["sent by"], rows)
    out.figure("rounds", rounds)
    queries = [r for r in rows if r[5] in ("False", "0")]
    flagged = {prog: sum(1 for r in queries if r[-1] == prog and r[3]) for prog in ("dig", "host")}
    total = {prog: sum(1 for r in queries if r[-1] == prog) for prog in ("dig", "host")}
    replies = [r for r in rows if r[5] in ("True", "1")]
    out.figure("dig queries flagged", f"{flagged['dig']} of {total['dig']}")
    out.figure("host (plain) queries flagged", f"{flagged['host']} of {total['host']}")
    out.figure("replies flagged", sum(1 for r in replies if r[3]))
    out.figure("queries decoded as DNS (dns.qry.name present)", sum(1 for r in queries if r[6]))
    plt = x.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    progs = ["dig (tagged)", "host (plain)"]
    ax.bar(progs, [flagged["dig"], flagged["host"]], label="flagged by the inverse module", color="tab:red")
    ax.bar(progs, [total["dig"] - flagged["dig"], total["host"] - flagged["host"]],
           bottom=[flagged["dig"], flagged["host"]], label="plain DNS", color="tab:blue")
    ax.set_ylabel("queries in the capture")
    ax.set_title(f"tshark + generated app-id dissector ({out.mode})")
    ax.legend(fontsize=8)
    out.plot(fig)
    out.done()


def run(bed, work, rounds):
    server = bed.addr("server")
    params = "<app-id-tag><label>l45</label></app-id-tag>"
    bed.devices["client"].edit(x.module(1, "app-id-tag", 10, f"<protocol>udp</protocol><destination-port>{PORT}"
                                        "</destination-port><process-name>dig</process-name>", params))
    bed.devices["server"].edit(x.module(1, "app-id-tag", 10, f"<protocol>udp</protocol><source-port>{PORT}"
                                        "</source-port><process-name>dnsmasq</process-name>", params))
    (work / "dns").mkdir()
    dns = x.Dnsmasq(work / "dns", env=bed.env("server"), host=server, port=PORT, prefix=bed.prefix("server"))
    pcap = work / "wire.pcap"
    cap = x.Tcpdump(bed, "server", pcap, f"udp port {PORT}", snap=0)
    env = bed.env("client")
    for i in range(rounds):
        for prog in ("dig", "host"):
            name = f"{prog}-{i}.example.test"
            cmd = (["dig", f"@{server}", name, "+tries=1", "+time=2", "+short"] if prog == "dig"
                   else ["host", "-W", "2", "-t", "A", name, server])
            p = subprocess.run([*bed.prefix("client"), *cmd], env=env, capture_output=True, text=True)
            if x.taplab.ANSWER not in p.stdout:
                raise RuntimeError(f"{prog} {name} not answered: {p.stdout}{p.stderr}")
    cap.records()
    return dns, pcap


def dissect(work, pcap):
    lua = work / "app-id.lua"
    with open(lua, "w") as f:
        subprocess.run([x.DISSECTOR, "app-id-tag", "label=l45", "--port", str(PORT)], stdout=f, check=True)
    p = subprocess.run(["tshark", "-r", str(pcap), "-X", f"lua_script:{lua}", "-T", "fields",
                        *sum((["-e", f] for f in FIELDS), []), "-E", "separator=\t"],
                       capture_output=True, text=True, check=True)
    rows = []
    for line in p.stdout.splitlines():
        cols = (line.split("\t") + [""] * len(FIELDS))[:len(FIELDS)]
        name = cols[6]
        rows.append(cols + ["dig" if name.startswith("dig-") else "host" if name.startswith("host-") else ""])
    return rows


if __name__ == "__main__":
    main()
