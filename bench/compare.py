#!/usr/bin/env python3
"""Side-by-side benchmark: wimguard vs wimlib-imagex on the same tree.

For each codec (none, xpress, lzx) it captures the tree with both tools
(same thread count), extracts the image with both, and appends the
unchanged tree with both. It prints wall time, archive size and peak
memory (max RSS of the child) for each, and the wimguard/wimlib ratio.
A ratio below 1.0 means wimguard is faster / smaller / leaner.

Usage: bench/compare.py [--tree DIR] [--copy-of /usr/share] [--threads N]
                        [--wimguard target/release/wimguard] [--codecs none,xpress,lzx]
The tree is copied first (default: a copy of /usr/share), so both tools
read the same files from the same page cache state; each step runs once
warm after an untimed warm-up read.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time


def run(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS in MiB). Fails loudly."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    out, err = p.stdout.read(), p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{out.decode(errors='replace')}\n{err.decode(errors='replace')}")
    return dt, ru.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree")
    ap.add_argument("--copy-of", default="/usr/share")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--wimguard", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "wimguard"))
    ap.add_argument("--codecs", default="none,xpress,lzx")
    args = ap.parse_args()
    wg = os.path.abspath(args.wimguard)
    if not os.access(wg, os.X_OK):
        sys.exit(f"{wg} not found: build it with `cargo build --release`")
    if shutil.which("wimlib-imagex") is None:
        sys.exit("wimlib-imagex not found: apt-get install wimtools")
    work = tempfile.mkdtemp(prefix="wimguard-bench-")
    try:
        tree = args.tree
        if tree is None:
            tree = os.path.join(work, "tree")
            print(f"copying {args.copy_of} to {tree} ...", flush=True)
            subprocess.run(["cp", "-a", args.copy_of, tree], check=True)
        subprocess.run(["tar", "cf", "/dev/null", tree], check=True)  # warm the page cache
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        rows = []
        for codec in args.codecs.split(","):
            wl_wim, wg_wim = os.path.join(work, f"wl-{codec}.wim"), os.path.join(work, f"wg-{codec}.wim")
            steps = {}
            steps["capture"] = (
                run(["wimlib-imagex", "capture", tree, wl_wim, "img", "--unix-data", f"--compress={codec}", f"--threads={args.threads}"]),
                run([wg, "archive", "capture", tree, wg_wim, "--name", "img", "--compression", codec], env),
            )
            sizes = (os.path.getsize(wl_wim), os.path.getsize(wg_wim))
            for tool, wim in (("wl", wl_wim), ("wg", wg_wim)):
                shutil.rmtree(os.path.join(work, f"x-{tool}"), ignore_errors=True)
            steps["extract"] = (
                run(["wimlib-imagex", "apply", wl_wim, "1", os.path.join(work, "x-wl"), "--unix-data"]),
                run([wg, "archive", "extract", wg_wim, "1", os.path.join(work, "x-wg")], env),
            )
            shutil.rmtree(os.path.join(work, "x-wl"), ignore_errors=True)
            shutil.rmtree(os.path.join(work, "x-wg"), ignore_errors=True)
            # wimlib's fastest unchanged re-append trusts the previous image (--update-of).
            steps["append unchanged"] = (
                run(["wimlib-imagex", "append", tree, wl_wim, "img2", "--unix-data", "--update-of=1", f"--threads={args.threads}"]),
                run([wg, "archive", "capture", tree, wg_wim, "--name", "img2"], env),
            )
            grow = (os.path.getsize(wl_wim) - sizes[0], os.path.getsize(wg_wim) - sizes[1])
            for step, ((wlt, wlm), (wgt, wgm)) in steps.items():
                rows.append((codec, step, wlt, wgt, wgm, wlm))
            rows.append((codec, "size", sizes[0], sizes[1], None, None))
            rows.append((codec, "append growth", grow[0], grow[1], None, None))
            os.remove(wl_wim)
            os.remove(wg_wim)
        print()
        print(f"tree: {tree}; threads: {args.threads}")
        print(f"{'codec':7} {'step':17} {'wimlib':>12} {'wimguard':>12} {'ratio':>7}   {'RSS wimlib':>10} {'RSS wg':>8} {'ratio':>6}")
        for codec, step, a, b, wgm, wlm in rows:
            if wgm is None:
                print(f"{codec:7} {step:17} {a:>12} {b:>12} {b / max(a, 1):7.3f}")
            else:
                print(f"{codec:7} {step:17} {a:11.2f}s {b:11.2f}s {b / max(a, 1e-9):7.2f}   {wlm:9.0f}M {wgm:7.0f}M {wgm / max(wlm, 1e-9):6.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
