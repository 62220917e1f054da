#!/usr/bin/env python3
"""Side-by-side benchmark: wimguard vs wimlib-imagex on the same tree.

For each codec (none, xpress, lzx) it captures the tree with both tools
(same thread count), extracts the image with both, and appends the
unchanged tree with both. It prints wall time, archive size, peak
memory (max RSS of the child) and CPU time (user + system) for each, and
the wimguard/wimlib ratio.
A ratio below 1.0 means wimguard is faster / smaller / leaner.

Then (issue 13) it reports, in the same run:
* scaling with threads: LZX capture and extract pinned to 1 and to 2 CPUs
  (`taskset`), both tools, and the 2-thread speed-up of each;
* scaling with tree size: capture (none) of generated trees of 10k, 100k
  and 1M small files (`--quick`: 1k, 10k, 100k), time and peak RSS per
  tool, and how the time per file grows from one size to the next
  (`--scratch /dev/shm` generates them in memory; `--only-size-scaling`
  runs just these rows);
* the daemon: `wimguard backup` through a running server against the
  offline `wimguard archive capture` of the same tree and codec, in wall
  and in CPU time (the server's, read from /proc, plus the client's);
* wasm vs native codecs: the summary of `codec_runtimes` (built with
  `cargo build --release --example codec_runtimes`; skipped when absent);
* runs of one byte: capture and extract of a tree holding a sparse file
  of 512 MiB (`--quick`: 128 MiB), mostly zeros, as disk images and
  preallocated files are, with XPRESS and LZX.

Usage: bench/compare.py [--tree DIR] [--copy-of /usr/share] [--threads N]
                        [--wimguard target/release/wimguard] [--codecs none,xpress,lzx]
                        [--quick] [--no-extras] [--reps 3]
The tree is copied first (default: a copy of /usr/share; `--quick`: of
/usr/share/doc), so both tools read the same files from the same page
cache state. Captures and extracts run `--reps` rounds (default 3), the
tools taking turns to go first, and keep each tool's best time; the other
steps run once.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time


def run(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS in MiB, CPU seconds). Fails
    loudly.

    Output goes to temporary files, not pipes: a tool that prints much
    (wimlib's progress on a large tree) would fill a pipe nobody reads and
    stop. Peak RSS comes from GNU time when it is installed: the rusage of
    a child started from Python also counts the forked interpreter
    (~14 MiB) before the exec, which hides small peaks. CPU time (user and
    system, every thread) comes from the rusage of the child, which also
    holds what GNU time waited for: on a shared machine it varies far less
    than wall time, so it shows changes of a few percent that one round's
    wall time hides (identical LZX captures of /usr/share: 0.79-0.92 of
    wimlib's wall time)."""
    gnu_time = os.access("/usr/bin/time", os.X_OK)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r") as peak:
        timed = ["/usr/bin/time", "-o", peak.name, "-f", "%M"] if gnu_time else []
        t0 = time.monotonic()
        p = subprocess.Popen(timed + cmd, stdout=out, stderr=err, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.monotonic() - t0
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        o, e = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if code != 0:
            sys.exit(f"FAILED ({code}): {' '.join(cmd)}\n{o}\n{e}")
        cpu = ru.ru_utime + ru.ru_stime
        if gnu_time:
            return dt, int(peak.read().strip().splitlines()[-1]) / 1024.0, cpu
    return dt, ru.ru_maxrss / 1024.0, cpu


def paired(wl_cmd, wg_cmd, env, reps, before):
    """Runs both tools `reps` times, taking turns to go first, with
    `before(tool)` (removing outputs) ahead of every run; returns ((best time,
    highest RSS, least CPU time) of wimlib, same of wimguard, the time ratio
    of each round, the CPU time ratio of each round).
    Single runs on a shared VM mislead: the second of two extracts into
    tmpfs ran up to 2.5x slower than the first, whichever tool it was. The
    rounds' ratios show how much one run says."""
    best = {"wl": (float("inf"), 0.0, float("inf")), "wg": (float("inf"), 0.0, float("inf"))}
    ratios, cpu_ratios = [], []
    for i in range(max(reps, 1)):
        order = (("wl", wl_cmd, None), ("wg", wg_cmd, env))
        times, cpus = {}, {}
        for tool, cmd, e in (order if i % 2 == 0 else order[::-1]):
            before(tool)
            t, m, c = run(cmd, e)
            times[tool], cpus[tool] = t, c
            best[tool] = (min(best[tool][0], t), max(best[tool][1], m), min(best[tool][2], c))
        ratios.append(times["wg"] / max(times["wl"], 1e-9))
        cpu_ratios.append(cpus["wg"] / max(cpus["wl"], 1e-9))
    return best["wl"], best["wg"], ratios, cpu_ratios


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree")
    ap.add_argument("--copy-of", default="/usr/share")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--wimguard", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "wimguard"))
    ap.add_argument("--codecs", default="none,xpress,lzx")
    ap.add_argument("--quick", action="store_true", help="a small tree and small generated trees")
    ap.add_argument("--no-extras", action="store_true", help="only the per-codec table")
    ap.add_argument("--scratch", help="where to generate the trees of many small files (e.g. /dev/shm: "
                    "a million files are slow to create on a VM's disk); default: the work directory")
    ap.add_argument("--only-size-scaling", action="store_true", help="skip everything but the tree-size rows")
    ap.add_argument("--reps", type=int, default=3,
                    help="rounds of each capture, extract and re-backup, the tools taking turns to go first; "
                         "the best time and the highest RSS are kept (default 3)")
    args = ap.parse_args()
    if args.quick and args.tree is None and args.copy_of == "/usr/share":
        args.copy_of = "/usr/share/doc"
    wg = os.path.abspath(args.wimguard)
    if not os.access(wg, os.X_OK):
        sys.exit(f"{wg} not found: build it with `cargo build --release`")
    if shutil.which("wimlib-imagex") is None:
        sys.exit("wimlib-imagex not found: apt-get install wimtools")
    work = tempfile.mkdtemp(prefix="wimguard-bench-")
    tree_sizes = [1_000, 10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    if args.only_size_scaling:
        try:
            size_scaling(wg, work, tree_sizes, args.scratch)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    try:
        tree = args.tree
        if tree is None:
            tree = os.path.join(work, "tree")
            print(f"copying {args.copy_of} to {tree} ...", flush=True)
            subprocess.run(["cp", "-a", args.copy_of, tree], check=True)
        subprocess.run(["tar", "cf", "/dev/null", tree], check=True, stderr=subprocess.DEVNULL)  # warm the page cache
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        rows = []
        for codec in args.codecs.split(","):
            wl_wim, wg_wim = os.path.join(work, f"wl-{codec}.wim"), os.path.join(work, f"wg-{codec}.wim")
            steps = {}
            own = {"wl": wl_wim, "wg": wg_wim}
            steps["capture"] = paired(
                ["wimlib-imagex", "capture", tree, wl_wim, "img", "--unix-data", f"--compress={codec}", f"--threads={args.threads}"],
                [wg, "archive", "capture", tree, wg_wim, "--name", "img", "--compression", codec],
                env, args.reps, before=lambda tool: os.path.exists(own[tool]) and os.remove(own[tool]))
            sizes = (os.path.getsize(wl_wim), os.path.getsize(wg_wim))
            x_wl, x_wg = os.path.join(work, "x-wl"), os.path.join(work, "x-wg")
            steps["extract"] = paired(
                ["wimlib-imagex", "apply", wl_wim, "1", x_wl, "--unix-data"],
                [wg, "archive", "extract", wg_wim, "1", x_wg],
                env, args.reps, before=lambda _tool: [shutil.rmtree(x, ignore_errors=True) for x in (x_wl, x_wg)])
            shutil.rmtree(os.path.join(work, "x-wl"), ignore_errors=True)
            shutil.rmtree(os.path.join(work, "x-wg"), ignore_errors=True)
            # wimlib's fastest unchanged re-append trusts the previous image
            # (--update-of). Each round appends to a fresh copy of the
            # one-image archive, so rounds are alike.
            pristine = {"wl": wl_wim + ".one", "wg": wg_wim + ".one"}
            for tool, wim in (("wl", wl_wim), ("wg", wg_wim)):
                shutil.copyfile(wim, pristine[tool])
            steps["append unchanged"] = paired(
                ["wimlib-imagex", "append", tree, wl_wim, "img2", "--unix-data", "--update-of=1", f"--threads={args.threads}"],
                [wg, "archive", "capture", tree, wg_wim, "--name", "img2"],
                env, args.reps,
                before=lambda tool: shutil.copyfile(pristine[tool], own[tool]))
            for copy in pristine.values():
                os.remove(copy)
            grow = (os.path.getsize(wl_wim) - sizes[0], os.path.getsize(wg_wim) - sizes[1])
            for step, ((wlt, wlm, wlc), (wgt, wgm, wgc), ratios, cpu_ratios) in steps.items():
                rows.append((codec, step, wlt, wgt, wgm, wlm, ratios, (wlc, wgc, cpu_ratios)))
            rows.append((codec, "size", sizes[0], sizes[1], None, None, None, None))
            rows.append((codec, "append growth", grow[0], grow[1], None, None, None, None))
            os.remove(wl_wim)
            os.remove(wg_wim)
        print()
        print(f"tree: {tree}; threads: {args.threads}")
        print("times are each tool's best round; 'rounds' is the lowest and highest time ratio of a single round;")
        print("CPU is user + system time of every thread (each tool's least), steadier than wall time on a shared machine")
        print(f"{'codec':7} {'step':17} {'wimlib':>12} {'wimguard':>12} {'ratio':>7} {'rounds':>11}   "
              f"{'RSS wimlib':>10} {'RSS wg':>8} {'ratio':>6}   {'CPU wl':>8} {'CPU wg':>8} {'ratio':>6} {'rounds':>11}")
        for codec, step, a, b, wgm, wlm, ratios, cpu in rows:
            if wgm is None:
                print(f"{codec:7} {step:17} {a:>12} {b:>12} {b / max(a, 1):7.3f}")
            else:
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                wlc, wgc, cpu_ratios = cpu
                cpu_spread = f"{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}"
                print(f"{codec:7} {step:17} {a:11.2f}s {b:11.2f}s {b / max(a, 1e-9):7.2f} {spread:>11}   "
                      f"{wlm:9.0f}M {wgm:7.0f}M {wgm / max(wlm, 1e-9):6.2f}   "
                      f"{wlc:7.2f}s {wgc:7.2f}s {wgc / max(wlc, 1e-9):6.2f} {cpu_spread:>11}")
        if not args.no_extras:
            threads_scaling(wg, tree, work)
            size_scaling(wg, work, tree_sizes, args.scratch)
            daemon_overhead(wg, tree, work, env)
            codec_runtimes(wg)
            sparse_rows(wg, work, env, args.reps, 128 if args.quick else 512)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sparse_rows(wg, work, env, reps, mib):
    """Capture and extract of one sparse file of `mib` MiB: a hole with a
    little text at the start and the end."""
    src = os.path.join(work, "sparse-tree")
    os.makedirs(src)
    with open(os.path.join(src, "disk.img"), "wb") as f:
        f.write(b"boot sector\n" * 40)
        f.truncate(mib << 20)
        f.seek(0, os.SEEK_END)
        f.write(b"the end\n")
    print(f"\nruns of one byte: a sparse file of {mib} MiB")
    print(f"{'codec':7} {'step':8} {'wimlib':>9} {'wimguard':>9} {'ratio':>6} {'rounds':>11} {'size ratio':>10}")
    for codec in ("xpress", "lzx"):
        wl_wim, wg_wim = os.path.join(work, "s-wl.wim"), os.path.join(work, "s-wg.wim")
        own = {"wl": wl_wim, "wg": wg_wim}
        cap = paired(["wimlib-imagex", "capture", src, wl_wim, "img", "--unix-data", f"--compress={codec}"],
                     [wg, "archive", "capture", src, wg_wim, "--name", "img", "--compression", codec],
                     env, reps, before=lambda tool: os.path.exists(own[tool]) and os.remove(own[tool]))
        size = os.path.getsize(wg_wim) / max(os.path.getsize(wl_wim), 1)
        x = os.path.join(work, "s-x")
        ext = paired(["wimlib-imagex", "apply", wl_wim, "1", x, "--unix-data"],
                     [wg, "archive", "extract", wg_wim, "1", x],
                     env, reps, before=lambda _tool: shutil.rmtree(x, ignore_errors=True))
        shutil.rmtree(x, ignore_errors=True)
        for step, ((wlt, _, _), (wgt, _, _), ratios, _) in (("capture", cap), ("extract", ext)):
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
            extra = f"{size:10.3f}" if step == "capture" else ""
            print(f"{codec:7} {step:8} {wlt:8.2f}s {wgt:8.2f}s {wgt / max(wlt, 1e-9):6.2f} {spread:>11} {extra}")
        os.remove(wl_wim)
        os.remove(wg_wim)
    shutil.rmtree(src, ignore_errors=True)


def pinned(cpus, cmd):
    """cmd pinned to the first `cpus` CPUs, told to use as many threads."""
    return ["taskset", "-c", ",".join(str(c) for c in range(cpus))] + cmd


def threads_scaling(wg, tree, work):
    """LZX capture and extract on 1 and 2 CPUs, both tools."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        print("\nthread scaling: skipped (needs taskset and 2 CPUs)")
        return
    print("\nthread scaling (lzx): time on 1 CPU, on 2, and the speed-up")
    print(f"{'tool':9} {'step':8} {'1 CPU':>9} {'2 CPUs':>9} {'speed-up':>9}")
    results = {}
    for n in (1, 2):
        env = dict(os.environ, RAYON_NUM_THREADS=str(n))
        wl_wim, wg_wim = os.path.join(work, "t-wl.wim"), os.path.join(work, "t-wg.wim")
        results[("wimlib", "capture", n)] = run(pinned(n, ["wimlib-imagex", "capture", tree, wl_wim, "img", "--unix-data",
                                                           "--compress=lzx", f"--threads={n}"]))[0]
        results[("wimguard", "capture", n)] = run(pinned(n, [wg, "archive", "capture", tree, wg_wim, "--name", "img",
                                                             "--compression", "lzx"]), env)[0]
        for tool, cmd in (("wimlib", ["wimlib-imagex", "apply", wl_wim, "1", os.path.join(work, "t-x"), "--unix-data"]),
                          ("wimguard", [wg, "archive", "extract", wg_wim, "1", os.path.join(work, "t-x")])):
            results[(tool, "extract", n)] = run(pinned(n, cmd), env)[0]
            shutil.rmtree(os.path.join(work, "t-x"), ignore_errors=True)
        os.remove(wl_wim)
        os.remove(wg_wim)
    for tool in ("wimlib", "wimguard"):
        for step in ("capture", "extract"):
            one, two = results[(tool, step, 1)], results[(tool, step, 2)]
            print(f"{tool:9} {step:8} {one:8.2f}s {two:8.2f}s {one / max(two, 1e-9):8.2f}x")
    for step in ("capture", "extract"):
        for n in (1, 2):
            print(f"ratio wimguard/wimlib, {step}, {n} CPU(s): "
                  f"{results[('wimguard', step, n)] / max(results[('wimlib', step, n)], 1e-9):.2f}")


def make_tree(root, files):
    """`files` small files (a few hundred bytes, a tenth of them alike) in
    directories of 1,000."""
    for i in range(files):
        d = os.path.join(root, f"d{i // 1000:04}")
        if i % 1000 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:07}"), "wb") as f:
            f.write((b"same content\n" * 20) if i % 10 == 0 else os.urandom(64) + b"x" * (i % 400))


def size_scaling(wg, work, sizes, scratch=None):
    """Capture (none) of generated trees of growing size: time, RSS, and
    the growth of time per file from one size to the next (1.0 = linear)."""
    print("\ntree size scaling (capture, none): time and peak RSS; growth = time per file vs the size before")
    print(f"{'files':>9} {'wimlib':>9} {'wimguard':>9} {'ratio':>6} {'RSS wl':>8} {'RSS wg':>8} {'ratio':>6} "
          f"{'growth wl':>9} {'growth wg':>9}")
    env = dict(os.environ)
    before = None
    for n in sizes:
        root = tempfile.mkdtemp(prefix=f"gen-{n}-", dir=scratch or work)
        os.rmdir(root)
        make_tree(root, n)
        subprocess.run(["tar", "cf", "/dev/null", root], check=True, stderr=subprocess.DEVNULL)
        wl_wim, wg_wim = os.path.join(work, "g-wl.wim"), os.path.join(work, "g-wg.wim")
        wlt, wlm, _ = run(["wimlib-imagex", "capture", root, wl_wim, "img", "--unix-data", "--compress=none"])
        wgt, wgm, _ = run([wg, "archive", "capture", root, wg_wim, "--name", "img", "--compression", "none"], env)
        growth = ("", "")
        if before:
            (pn, pwl, pwg) = before
            growth = (f"{(wlt / n) / (pwl / pn):.2f}", f"{(wgt / n) / (pwg / pn):.2f}")
        print(f"{n:9} {wlt:8.2f}s {wgt:8.2f}s {wgt / max(wlt, 1e-9):6.2f} {wlm:7.0f}M {wgm:7.0f}M "
              f"{wgm / max(wlm, 1e-9):6.2f} {growth[0]:>9} {growth[1]:>9}")
        before = (n, wlt, wgt)
        os.remove(wl_wim)
        os.remove(wg_wim)
        shutil.rmtree(root)


def daemon_overhead(wg, tree, work, env):
    """`wimguard backup` through a running server vs the offline capture."""
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "config.yaml"), "w") as f:
        f.write("appSecret: bench\n")
    denv = dict(env, WIMGUARD_LOG="warn")
    server = subprocess.Popen([wg, "server", "--home", home, "--port", "0"], env=denv,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while subprocess.run([wg, "health", "--home", home], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL).returncode:
            if time.monotonic() - t0 > 60:
                sys.exit("wimguard server did not start")
            time.sleep(0.1)
        print("\nthrough the daemon (lzx): `wimguard backup` vs `wimguard archive capture` of the same tree")
        offline, _, offline_cpu = run([wg, "archive", "capture", tree, os.path.join(work, "off.wim"), "--name", "img",
                                       "--compression", "lzx"], env)
        # The work happens in the server: its CPU time over the backup,
        # plus the client's.
        before = process_cpu(server.pid)
        daemon, _, client_cpu = run([wg, "backup", "--home", home, "--source", tree,
                                     "--destination", os.path.join(work, "dmn.wim"), "--compression", "lzx"], denv)
        daemon_cpu = process_cpu(server.pid) - before + client_cpu
        print(f"offline {offline:.2f}s, daemon {daemon:.2f}s, ratio {daemon / max(offline, 1e-9):.3f}; "
              f"CPU offline {offline_cpu:.2f}s, daemon {daemon_cpu:.2f}s (server + client), "
              f"ratio {daemon_cpu / max(offline_cpu, 1e-9):.3f}")
    finally:
        server.terminate()
        server.wait()


def process_cpu(pid):
    """User + system CPU seconds of a running process, all its threads
    (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name is in parentheses and may hold spaces: count
        # fields after it (utime and stime are fields 14 and 15).
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def codec_runtimes(wg):
    """The summary of the codec_runtimes example: wasm vs native vs wimlib."""
    exe = os.path.join(os.path.dirname(wg), "examples", "codec_runtimes")
    if not os.access(exe, os.X_OK):
        print(f"\nwasm vs native codecs: skipped ({exe} not built: cargo build --release --example codec_runtimes)")
        return
    print("\nwasm vs native codecs (codec_runtimes, per core, best of 3):")
    out = subprocess.run([exe, "--max-mib", "32"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True)
    print(out.stdout.decode(errors="replace").rstrip())


if __name__ == "__main__":
    main()
