"""Real middleboxes for the interference study (table 5.1 and its HTTP
schemes): Debian's programs, each started in the middlebox namespace of a
`MiddleboxBed`, none of them under the tap. Each is a context manager
(`with Unbound(bed, work): ...`) that stops what it started."""
import pathlib

import l45exp as x

SURICATA_YAML = """%YAML 1.1
---
vars:
  address-groups: {{HOME_NET: "any", EXTERNAL_NET: "any"}}
  port-groups: {{HTTP_PORTS: "80", DNS_PORTS: "53"}}
default-log-dir: {log}
default-rule-path: {log}
rule-files: [l45.rules]
classification-file: /etc/suricata/classification.config
reference-config-file: /etc/suricata/reference.config
outputs:
  - eve-log:
      enabled: yes
      filetype: regular
      filename: eve.json
      types: [alert, drop, anomaly]
logging:
  default-log-level: notice
  outputs:
    - console: {{enabled: yes}}
af-packet:
  - {{interface: eth0, copy-mode: ips, copy-iface: eth1, cluster-id: 98, cluster-type: cluster_flow, defrag: no,
     use-mmap: yes, threads: 1}}
  - {{interface: eth1, copy-mode: ips, copy-iface: eth0, cluster-id: 97, cluster-type: cluster_flow, defrag: no,
     use-mmap: yes, threads: 1}}
app-layer:
  protocols:
    dns:
      tcp: {{enabled: yes, detection-ports: {{dp: 53}}}}
      udp: {{enabled: yes, detection-ports: {{dp: 53}}}}
    http:
      enabled: yes
    tls:
      enabled: yes
stream:
  inline: auto
"""

# The rule files Debian ships with suricata whose events say "this is not
# well-formed DNS / HTTP / application data", turned from alert into drop:
# an inline IPS that drops malformed protocol traffic, as the
# dissertation's Clemson firewall did.
EVENT_RULES = ("dns-events.rules", "http-events.rules", "app-layer-events.rules")


class Box:
    name = "?"
    kind = "?"

    def __init__(self, bed, work):
        self.bed, self.work = bed, pathlib.Path(work) / self.name.replace(" ", "-")
        self.work.mkdir(parents=True, exist_ok=True)
        self.daemon = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        if self.daemon:
            self.daemon.close()

    def start(self):
        pass

    @property
    def prefix(self):
        return ["ip", "netns", "exec", self.bed.hosts["mbox"][0]]


class Router(Box):
    """No middlebox program: the namespace only forwards IP (control row)."""
    name, kind, mode = "IP router (control)", "router", "routed"


class UdpDnsGateway(Box):
    """A gateway router whose firewall drops every UDP datagram to port 53
    it forwards (nftables, in the middlebox namespace): the dissertation's
    University of Hawaii node (table 5.1), where "the university's gateway
    router [was] filtering all UDP traffic on port 53" while TCP to port
    53 and UDP to other ports passed."""
    name, kind, mode = "gateway dropping UDP/53", "router + nftables", "routed"
    TABLE = "l45_gateway"

    def start(self):
        rules = self.work / "gateway.nft"
        rules.write_text(f"""table inet {self.TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    udp dport 53 counter drop
  }}
}}
""")
        x.sh(*self.prefix, "nft", "-f", str(rules))

    def dropped(self):
        """(packets, bytes) the drop rule has counted."""
        import re
        listing = x.sh(*self.prefix, "nft", "list", "table", "inet", self.TABLE).stdout
        m = re.search(r"counter packets (\d+) bytes (\d+) drop", listing)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)

    def __exit__(self, *exc):
        x.sh(*self.prefix, "nft", "delete", "table", "inet", self.TABLE, check=False)
        super().__exit__(*exc)


class Suricata(Box):
    """suricata inline (AF_PACKET IPS mode, copying frames between the two
    interfaces), Debian's protocol-event rules set to drop. `strict` adds
    one rule of ours: drop UDP to port 53 that suricata could not detect as
    any protocol (Debian's rules only look inside what parses as DNS)."""
    name, kind, mode = "suricata IPS", "inline IPS", "wire"

    def __init__(self, bed, work, strict=False):
        self.strict = strict
        if strict:
            self.name = "suricata IPS, strict port 53"
        super().__init__(bed, work)

    def start(self):
        rules = []
        if self.strict:
            rules.append('drop udp any any -> any 53 (msg:"L45 experiment: UDP to port 53 that is not DNS"; '
                         "app-layer-protocol:failed; sid:9900001; rev:1;)")
        for f in EVENT_RULES:
            for line in pathlib.Path("/etc/suricata/rules", f).read_text().splitlines():
                if line.startswith("alert "):
                    rules.append("drop " + line[len("alert "):])
        (self.work / "l45.rules").write_text("\n".join(rules) + "\n")
        conf = self.work / "suricata.yaml"
        conf.write_text(SURICATA_YAML.format(log=self.work))
        log = self.work / "suricata.out"
        self.daemon = x.Daemon("suricata", ["suricata", "-c", str(conf), "--af-packet", "-k", "none",
                                            "--pidfile", str(self.work / "suricata.pid")],
                               self.prefix, log, ready=lambda: "Engine started" in log.read_text(), timeout=120)

    def events(self):
        import json
        eve = self.work / "eve.json"
        out = []
        if eve.exists():
            for line in eve.read_text().splitlines():
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("event_type") in ("alert", "drop"):
                    out.append((e.get("event_type"), e.get("alert", {}).get("signature", ""),
                                e.get("alert", {}).get("action", "")))
        return out


class DnsmasqForwarder(Box):
    name, kind, mode = "dnsmasq forwarder", "DNS forwarder", "routed"

    def start(self):
        b = self.bed
        self.daemon = x.Daemon("dnsmasq", [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", f"--server={b.hosts['server'][1]}",
            f"--listen-address={b.mbox_addr}", "--bind-interfaces", "--cache-size=0", "--port=53",
            f"--pid-file={self.work / 'pid'}", "--log-facility=-", "--conf-file=/dev/null"],
            self.prefix, self.work / "log", ready=lambda: x.port_listening(self.prefix, 53))


class Unbound(Box):
    name, kind, mode = "unbound forwarder", "DNS forwarder (recursive)", "routed"

    def start(self):
        b = self.bed
        conf = self.work / "unbound.conf"
        conf.write_text(f"""server:
  interface: {b.mbox_addr}
  port: 53
  access-control: 0.0.0.0/0 allow
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: "{self.work}"
  pidfile: "{self.work}/unbound.pid"
  use-syslog: no
  verbosity: 1
  module-config: "iterator"
  domain-insecure: "."
  local-zone: "test." nodefault  # unbound answers RFC 6761 names itself otherwise
  msg-cache-size: 0
  rrset-cache-size: 0
forward-zone:
  name: "."
  forward-addr: {b.hosts['server'][1]}@53
""")
        self.daemon = x.Daemon("unbound", ["unbound", "-d", "-c", str(conf)], self.prefix, self.work / "log",
                               ready=lambda: x.port_listening(self.prefix, 53))


class Bind9(Box):
    name, kind, mode = "bind9 forwarder", "DNS forwarder (recursive)", "routed"

    def start(self):
        b = self.bed
        conf = self.work / "named.conf"
        conf.write_text(f"""options {{
  directory "{self.work}";
  pid-file "{self.work}/named.pid";
  listen-on port 53 {{ {b.mbox_addr}; }};
  listen-on-v6 {{ none; }};
  recursion yes;
  allow-query {{ any; }};
  allow-recursion {{ any; }};
  forwarders {{ {b.hosts['server'][1]}; }};
  forward only;
  dnssec-validation no;
  max-cache-size 1m;
  max-cache-ttl 0;
  max-ncache-ttl 0;
}};
controls {{ }};
""")
        self.daemon = x.Daemon("named", ["named", "-g", "-c", str(conf)], self.prefix, self.work / "log",
                               ready=lambda: x.port_listening(self.prefix, 53))


class Squid(Box):
    """squid as a forward proxy: curl -x http://MBOX:3128. It runs as its
    user `proxy`, which cannot write into the experiment's private
    directory: no files (its messages go to the log on stderr)."""
    name, kind, mode = "squid proxy", "HTTP forward proxy", "routed"
    port = 3128

    def start(self):
        conf = self.work / "squid.conf"
        conf.write_text(f"""http_port {self.bed.mbox_addr}:{self.port}
http_access allow all
cache deny all
cache_mem 8 MB
pid_filename none
access_log none
cache_log /dev/null
shutdown_lifetime 1 seconds
""")
        self.daemon = x.Daemon("squid", ["squid", "-N", "-f", str(conf)], self.prefix, self.work / "log",
                               ready=lambda: x.port_listening(self.prefix, self.port, "tcp"), timeout=60)


class Haproxy(Box):
    """haproxy as a reverse proxy in front of the server (HTTP mode: it
    parses requests and responses; TCP mode: it relays bytes)."""
    kind, mode = "HTTP reverse proxy", "routed"
    port = 8080

    def __init__(self, bed, work, http_mode=True, backend_port=8000):
        self.http_mode, self.backend_port = http_mode, backend_port
        self.name = f"haproxy ({'http' if http_mode else 'tcp'} mode)"
        super().__init__(bed, work)

    def start(self):
        conf = self.work / "haproxy.cfg"
        mode = "http" if self.http_mode else "tcp"
        conf.write_text(f"""global
  maxconn 100
defaults
  mode {mode}
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend fe
  bind {self.bed.mbox_addr}:{self.port}
  default_backend be
backend be
  server s1 {self.bed.hosts['server'][1]}:{self.backend_port}
""")
        self.daemon = x.Daemon("haproxy", ["haproxy", "-db", "-f", str(conf)], self.prefix, self.work / "log",
                               ready=lambda: x.port_listening(self.prefix, self.port, "tcp"))
