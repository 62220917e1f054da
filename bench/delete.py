#!/usr/bin/env python3
"""Deleting one image from a large archive: wimguard vs wimlib-imagex.

Builds one archive of IMAGES images (each its own SIZE/IMAGES MB of files;
4/5 random, 1/5 text, so the codec has work and the archive comes out at
about 0.86 x SIZE MB: 500 MB by default), then, on fresh copies of it, times

  * `wimguard archive delete WIM N --soft`  vs  `wimlib-imagex delete WIM N --soft`
  * `wimguard archive delete WIM N`         vs  `wimlib-imagex delete WIM N` (a rebuild)
  * `wimguard archive optimize WIM` after the soft delete  vs  `wimlib-imagex optimize WIM`

and prints wimguard/wimlib ratios (below 1.0: wimguard is faster), plus how
much faster a soft delete is than a rebuild. Every result is checked with
`wimlib-imagex verify` (untimed). Each timing is the best of --reps runs.

Usage: bench/delete.py [--size-mb 580] [--images 5] [--wimguard target/release/wimguard]
"""
import argparse, os, random, shutil, subprocess, sys, tempfile, time


def run(cmd):
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n"
                 f"{p.stdout.decode(errors='replace')}\n{p.stderr.decode(errors='replace')}")
    return time.monotonic() - t0, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def make_tree(root, size, seed):
    rng = random.Random(seed)
    words = open("/usr/share/dict/words").read().split() if os.path.exists("/usr/share/dict/words") \
        else [f"word{i}" for i in range(5000)]
    os.makedirs(root)
    written, n = 0, 0
    while written < size:
        d = os.path.join(root, f"d{n // 50:03}")
        os.makedirs(d, exist_ok=True)
        length = rng.randint(64 << 10, 2 << 20)
        with open(os.path.join(d, f"f{n:05}"), "wb") as f:
            if n % 5:
                f.write(rng.randbytes(length))
            else:
                text = " ".join(rng.choice(words) for _ in range(length // 6)).encode()
                f.write(text[:length])
        written += length
        n += 1


def main():
    ap = argparse.ArgumentParser()
    # Source MB; 4/5 of it is random, so the archive comes out at about 0.86x (500 MB).
    ap.add_argument("--size-mb", type=int, default=580)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--delete", type=int, default=0, help="image to delete (default: the middle one)")
    ap.add_argument("--wimguard", default="target/release/wimguard")
    ap.add_argument("--compression", default="lzx", choices=["none", "xpress", "lzx"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    wg = os.path.abspath(a.wimguard)
    if not os.access(wg, os.X_OK):
        sys.exit(f"{wg} not found: build it with `cargo build --release`")
    if not shutil.which("wimlib-imagex"):
        sys.exit("wimlib-imagex not found: run scripts/ensure-deps.sh")
    victim = a.delete or (a.images + 1) // 2
    work = tempfile.mkdtemp(prefix="wg-delete-bench-", dir=a.workdir)
    try:
        base = os.path.join(work, "base.wim")
        per = a.size_mb * 1_000_000 // a.images
        for i in range(1, a.images + 1):
            tree = os.path.join(work, f"tree{i}")
            make_tree(tree, per, seed=i)
            # The archive is written by wimlib, so neither tool starts from its own layout.
            verb = "capture" if i == 1 else "append"
            run(["wimlib-imagex", verb, tree, base, f"img{i}", f"--compress={a.compression}"])
            shutil.rmtree(tree)
        size = os.path.getsize(base)
        print(f"archive: {size / 1e6:.1f} MB, {a.images} images, {a.compression}; deleting image {victim}")

        def best(label, prepare, cmd_of):
            times = []
            for r in range(a.reps):
                wim = os.path.join(work, f"{label}-{r}.wim")
                shutil.copyfile(base, wim)
                prepare(wim)
                os.sync()
                t, _ = run(cmd_of(wim))
                times.append(t)
                _, out = run(["wimlib-imagex", "verify", wim])
                # verify always notes a missing integrity table; anything else is a finding.
                noise = "does not contain integrity information"
                findings = [l for l in out.splitlines() if ("WARNING" in l or "ERROR" in l) and noise not in l]
                if findings or "successfully verified" not in out:
                    sys.exit(f"wimlib-imagex verify warned after {label}:\n{out}")
                last_size = os.path.getsize(wim)
                os.remove(wim)
            return min(times), last_size

        nothing = lambda wim: None
        soft_first = lambda tool: (lambda wim: run(
            [wg, "archive", "delete", wim, str(victim), "--soft"] if tool == "wg"
            else ["wimlib-imagex", "delete", wim, str(victim), "--soft"]))
        rows = [
            ("soft delete",
             best("wg-soft", nothing, lambda w: [wg, "archive", "delete", w, str(victim), "--soft"]),
             best("wl-soft", nothing, lambda w: ["wimlib-imagex", "delete", w, str(victim), "--soft"])),
            ("delete (rebuild)",
             best("wg-full", nothing, lambda w: [wg, "archive", "delete", w, str(victim)]),
             best("wl-full", nothing, lambda w: ["wimlib-imagex", "delete", w, str(victim)])),
            ("optimize after soft delete",
             best("wg-opt", soft_first("wg"), lambda w: [wg, "archive", "optimize", w]),
             best("wl-opt", soft_first("wl"), lambda w: ["wimlib-imagex", "optimize", w])),
        ]
        print(f"{'operation':28} {'wimguard s':>11} {'wimlib s':>9} {'ratio':>7} {'wg MB':>8} {'wl MB':>8}")
        for name, (tw, sw), (tl, sl) in rows:
            print(f"{name:28} {tw:11.3f} {tl:9.3f} {tw / tl:6.2f}x {sw / 1e6:8.1f} {sl / 1e6:8.1f}")
        (ws, _), (wf, _) = rows[0][1], rows[1][1]
        print(f"wimguard soft delete vs its own rebuild: {ws / wf:.3f}x the time "
              f"({wf / ws:.0f} times faster)")
        (ls, _), (lf, _) = rows[0][2], rows[1][2]
        print(f"wimguard soft delete vs wimlib rebuild: {ws / lf:.3f}x; wimlib soft vs rebuild: {ls / lf:.3f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
