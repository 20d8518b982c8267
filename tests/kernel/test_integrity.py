"""The integrity gate for the kernel path (issue: foundation).

Long bidirectional echoes through edged, compared byte for byte by
echo_check (a position-keyed pattern: any lost, duplicated, reordered or
foreign byte is reported with its offset), with a stall detector (no
progress for 20 s fails the run). On this kernel the textbook relay fails
this: verdict-only forwards retransmitted overlaps twice, a naive parser
stalls at the end (field guide §6b).

The gate proper keeps every flow in the kernel (a large kernel_backlog, so
no direction is handed to userspace) and checks that from the close log
line. A second set runs with the default bound, where bulk directions may
leave the kernel for userspace mid-stream, and must be just as exact.

EDGE_GATE_RUNS overrides the number of 512 MiB runs at 16 KiB (default 20).
"""
import os
import re

from edgetest import *

MiB = 1 << 20
RUNS_16K = int(os.environ.get("EDGE_GATE_RUNS", "20"))


def gate(extra, runs, nbytes, wsize, kernel_only):
    srv = EchoServer(mode="echo")
    port = free_port()
    e = Edged("""  - name: gate
    bind: ["127.0.0.1:%d"]
    routes:
      - upstream: "%s"
""" % (port, srv.addr), extra=extra)
    st = e.stats()["kernel_path"]
    check(st["loaded"], "kernel path not loaded: %s" % st.get("reason"))
    addr = "127.0.0.1:%d" % port
    rates = []
    for i in range(runs):
        rc, out = client(addr, nbytes, wsize=wsize, seed=1000 + i, stall=20)
        eq(rc, 0, "run %d/%d (%d MiB at %d-byte writes): %s"
           % (i + 1, runs, nbytes >> 20, wsize, out))
        rates.append(out.split("mbps_up=")[1].split()[0] if "mbps_up=" in out else "?")
        lines = wait_for(lambda: len(e.close_lines()) == i + 1 and e.close_lines(), 5,
                         "close line of run %d" % (i + 1))
        line = lines[-1]
        check("path=sockmap" in line, "run %d not on the kernel path: %s" % (i + 1, line))
        check("bytes_up=%d bytes_down=%d" % (nbytes, nbytes) in line,
              "run %d byte counters: %s" % (i + 1, line))
        if kernel_only:
            check("path_up=sockmap path_down=sockmap" in line,
                  "run %d left the kernel path: %s" % (i + 1, line))
    print("  %d x %d MiB at %d B writes: Mbit/s each way %s"
          % (runs, nbytes >> 20, wsize, " ".join(rates)))
    return e


# The gate proper: the kernel path only (datapath auto would move small-
# message directions to userspace), and a bound no run reaches.
BIG = "datapath: sockmap\nlimits:\n  kernel_backlog: 4GiB\n"


@test
def test_gate_16k():
    gate(BIG, RUNS_16K, 512 * MiB, 16384, True)


@test
def test_gate_128k():
    gate(BIG, 3, 512 * MiB, 131072, True)


@test
def test_gate_1k():
    gate(BIG, 3, 512 * MiB, 1024, True)


@test
def test_default_bound_16k():
    """Default 16 MiB bound: directions may continue in userspace."""
    e = gate("", 5, 512 * MiB, 16384, False)
    moved = sum(1 for l in e.close_lines() if "path_up=splice" in l or "path_down=splice" in l)
    print("  %d of 5 runs moved a direction to userspace" % moved)


def auto_moves(write, relay):
    """datapath auto moves a busy direction of small messages (WRITE-byte
    writes, TCP_NODELAY) to the RELAY mid-stream, where they move faster;
    the stream must stay exact through the move (echo_check: 256 MiB both
    ways, compared byte for byte, stall detector). The move comes from the
    auto check (20 ms windows) or, when the kernel queue passes the pause
    mark first, from the backlog move, which picks the relay by the same
    average message size; the close line keeps the last reason. The
    client's direction must have been moved by auto's judgement in at
    least 2 of 3 runs (its log line)."""
    srv = EchoServer(mode="echo")
    port = free_port()
    e = Edged("""  - name: auto
    bind: ["127.0.0.1:%d"]
    routes:
      - upstream: "%s"
""" % (port, srv.addr))
    addr = "127.0.0.1:%d" % port
    for run in range(3):
        rc, out = client(addr, 256 * MiB, wsize=write, seed=500 + run, stall=20, extra=("-N",))
        eq(rc, 0, "run %d (256 MiB at %d-byte writes): %s" % (run + 1, write, out))
    lines = wait_for(lambda: len(e.close_lines()) == 3 and e.close_lines(), 5, "close lines")
    for l in lines:
        check("bytes_up=%d bytes_down=%d" % (256 * MiB, 256 * MiB) in l, "byte counters: %s" % l)
    moved = [l for l in lines if re.search(r"path_up=(copy|splice)", l) and
             re.search(r"reason=(auto: \S+ moves small messages|\S+: kernel queue passed \d+ bytes)"
                       r".*relayed with (copy|splice)", l)]
    # Which relay a direction lands in depends on the message sizes the
    # verdict saw, and those on timing (segments that wait while the socket
    # is locked are merged): the choice is a speed heuristic, measured by
    # the bench; asserted here are the move and the exact stream.
    check(len(moved) >= 2, "runs moved to userspace by auto: %d of 3\n%s" % (len(moved), "\n".join(lines)))
    # auto's own judgement (its first 256 KiB, or a 20 ms window), not only
    # the backlog bound, moved the client's direction.
    judged = set(re.findall(r"flow id=(\d+) auto: client->upstream moves small messages", e.log()))
    check(len(judged) >= 2, "client->upstream moved by auto's judgement in %d of 3 runs\n%s"
          % (len(judged), "\n".join(lines)))
    print("  client->upstream relays: %s (expected mostly %s)"
          % (" ".join(re.search(r"path_up=(\w+)", l).group(1) for l in lines), relay))


@test
def test_auto_small_writes_leave_the_kernel():
    auto_moves(1024, "copy")


@test
def test_auto_medium_writes_leave_the_kernel():
    auto_moves(16384, "splice")


if __name__ == "__main__":
    run_module("kernel/test_integrity")
