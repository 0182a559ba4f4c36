"""The preload library as the dynamic linker sees it: every process that
loads it pays for what it needs and exports (docs/benchmarks.md)."""
import subprocess

from taplab import PRELOAD

INTERPOSED = {
    "__poll_chk", "__read_chk", "__recv_chk", "__recvfrom_chk", "accept", "accept4", "close",
    "connect", "dup2", "dup3", "epoll_ctl", "epoll_pwait", "epoll_wait", "ioctl", "poll", "ppoll",
    "read", "readv", "recv", "recvfrom", "recvmmsg", "recvmsg", "select", "send", "sendmmsg",
    "sendmsg", "sendto", "socket", "syscall", "write", "writev",
    # file to socket: through the chain when it changes what is sent
    "sendfile", "sendfile64", "splice",
    # the application's signal handlers, wrapped so the tap knows when it
    # runs inside one (no module image is loaded there)
    "sigaction", "signal", "bsd_signal",
}


def test_needs_only_libc_and_exports_only_the_interposed_calls():
    # Each dependency of a preloaded object lands early in the symbol lookup
    # scope of the whole process: ld.so there cost dig 0.3 M instructions at
    # start-up, libgcc_s 0.09 M (tap/preload/build.rs).
    dynamic = subprocess.run(["readelf", "-d", PRELOAD], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed == ["libc.so.6"], needed
    symbols = subprocess.run(["nm", "-D", "--defined-only", PRELOAD],
                             capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in symbols.splitlines() if line.strip()}
    assert exported == INTERPOSED, exported ^ INTERPOSED
