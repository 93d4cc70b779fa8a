#!/usr/bin/env python3
"""The command line against the same physical work by hand, paired runs (BENCHMARKS.md).

A (snaptree, the qemu backend, the default SQLite store) and B (qemu-img by hand) each run
one cycle in turn, A B A B ..., on their own copy of a 1 GiB qcow2 disk holding 64 MiB:

  A: snaptree snapshot-create-as DOM --name sN; 8 MiB of writes (qemu-io) into the live
     disk; snaptree snapshot-delete DOM sN --consolidate
  B: qemu-img create -b (an overlay over the disk, which then takes the writes); the same
     writes into the overlay; qemu-img commit of the overlay into the disk; rm the overlay

Each cycle is timed as a whole and by part (create; delete vs commit), wall clock and CPU
of the child processes; the ratio A/B is taken pair by pair and its median printed, so a
drift in the machine's speed during the run moves both sides alike.

Usage: benches/cli_vs_hand.py [--pairs N] SNAPTREE_BINARY [SNAPTREE_BINARY...]
(scripts/bench qemu runs it). Several binaries (two builds, before and after a change) each
get their own disk and state directory and take turns with B in the same run: A1 B A2 B ...
"""

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024


def run(*args, env=None):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env)


def timed(fn):
    """(wall s, CPU s of the children) of fn()."""
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    fn()
    w1 = time.perf_counter()
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    return w1 - w0, cpu


def writes(image, cycle):
    # 8 MiB in 1 MiB writes, a new pattern each cycle, over the first 64 MiB.
    cmds = []
    for k in range(8):
        off = ((cycle * 8 + k) % 64) * MIB
        cmds += ["-c", f"write -q -P {(cycle + k) % 255 + 1} {off} 1M"]
    run("qemu-io", "-f", "qcow2", *cmds, image)


def main():
    args = sys.argv[1:]
    pairs = 15
    if len(args) >= 2 and args[0] == "--pairs":
        pairs = int(args[1])
        args = args[2:]
    if not args:
        sys.exit(__doc__)
    work = tempfile.mkdtemp(prefix="snaptree-cli-vs-hand.")
    b_disk = f"{work}/b.qcow2"
    subjects = []
    for k, binary in enumerate(args):
        disk = f"{work}/a{k}.qcow2"
        env = dict(os.environ, SNAPTREE_STATE_DIR=f"{work}/state{k}")
        env.pop("SNAPTREE_STORE", None)
        subjects.append((os.path.abspath(binary), disk, env))
    for disk in [s[1] for s in subjects] + [b_disk]:
        run("qemu-img", "create", "-q", "-f", "qcow2", disk, "1G")
        run("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x11 0 64M", disk)
    for k, (snaptree, disk, env) in enumerate(subjects):
        with open(f"{work}/vm{k}.xml", "w") as f:
            f.write(
                "<domain type='qemu'><name>bench</name><devices>"
                "<disk type='file' device='disk' snapshot='external'>"
                f"<source file='{disk}'/><target dev='vda'/></disk>"
                "</devices></domain>"
            )
        run(snaptree, "define", f"{work}/vm{k}.xml", env=env)

    def a_cycle(subject, i, parts):
        snaptree, disk, env = subject
        name = f"s{i}"
        parts["create"] = timed(
            lambda: run(snaptree, "snapshot-create-as", "bench", "--name", name, env=env)
        )
        writes(disk, i)
        parts["delete"] = timed(
            lambda: run(snaptree, "snapshot-delete", "bench", name, "--consolidate", env=env)
        )

    def b_cycle(i, parts):
        overlay = f"{work}/b.overlay.qcow2"
        parts["create"] = timed(
            lambda: run("qemu-img", "create", "-q", "-f", "qcow2", "-b", b_disk, "-F", "qcow2", overlay)
        )
        writes(overlay, i)

        def commit():
            run("qemu-img", "commit", "-q", overlay)
            os.unlink(overlay)

        parts["delete"] = timed(commit)

    keys = ("cycle", "create", "delete")
    rows = [{k: [] for k in keys} for _ in subjects]
    for i in range(pairs + 1):
        for n, subject in enumerate(subjects):
            a_parts, b_parts = {}, {}
            a = timed(lambda: a_cycle(subject, i, a_parts))
            b = timed(lambda: b_cycle(i, b_parts))
            if i == 0:
                continue  # warm-up: page cache, first plugin load
            rows[n]["cycle"].append((a, b))
            rows[n]["create"].append((a_parts["create"], b_parts["create"]))
            rows[n]["delete"].append((a_parts["delete"], b_parts["delete"]))
    load = os.getloadavg()
    print(f"cli vs hand: {pairs} pairs per binary, 1 GiB qcow2 holding 64 MiB, 8 MiB written per cycle; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    print("| binary | part | A/B wall, median (min) | A/B CPU, median | A wall ms, median | B wall ms, median |")
    print("| --- | --- | --- | --- | --- | --- |")
    labels = {
        "cycle": "cycle (create + writes + consolidate)",
        "create": "snapshot-create-as vs qemu-img create -b",
        "delete": "snapshot-delete --consolidate vs qemu-img commit + rm",
    }
    for (snaptree, _, _), subject_rows in zip(subjects, rows):
        for key in keys:
            got = subject_rows[key]
            wall = [a[0] / b[0] for a, b in got]
            cpu = [a[1] / b[1] for a, b in got if b[1] > 0]
            print(
                f"| {snaptree} | {labels[key]} | {statistics.median(wall):.2f}x ({min(wall):.2f}x) | "
                f"{statistics.median(cpu):.2f}x | {statistics.median(a[0] for a, _ in got) * 1000:.1f} | "
                f"{statistics.median(b[0] for _, b in got) * 1000:.1f} |"
            )
    subprocess.run(["rm", "-rf", work], check=True)


if __name__ == "__main__":
    main()
