#!/usr/bin/env python3
"""Side-by-side benchmark of remote backups: restic vs wimguard, both writing
to the same local S3 server (s3s-fs, SigV4 checked), on the same tree.

For each tool it measures the first backup (wall time, bytes the store
holds afterwards) and a second backup after 1 % of the files changed (time,
bytes added), and prints wimguard/restic ratios (below 1.0: wimguard is
faster / smaller).

Usage: bench/remote.py [--copy-of /usr/share/doc] [--wimguard target/release/wimguard]
Needs: s3s-fs 0.14.1 (scripts/ensure-deps.sh installs it), restic (Debian
package `restic`; installed when missing and running as root).
"""
import argparse, os, random, shutil, signal, socket, subprocess, sys, tempfile, time

KEY, SECRET, BUCKET = "bench-key", "bench-secret-0123456789", "bench"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, what, timeout=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start on port {port}")


def run(cmd, env=None):
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stdout.decode(errors='replace')}\n{p.stderr.decode(errors='replace')}")
    return time.monotonic() - t0


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def change_one_percent(tree, seed=7):
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(tree) for f in fs
                   if os.path.isfile(os.path.join(r, f)) and not os.path.islink(os.path.join(r, f)))
    rng = random.Random(seed)
    chosen = rng.sample(files, max(1, len(files) // 100))
    for f in chosen:
        with open(f, "ab") as fh:
            fh.write(b"changed by the benchmark\n")
    return len(chosen)


def s3s_fs():
    for d in os.environ.get("PATH", "").split(":") + [os.path.expanduser("~/.cargo/bin")]:
        p = os.path.join(d, "s3s-fs")
        if os.access(p, os.X_OK):
            return p
    sys.exit("s3s-fs not found: run scripts/ensure-deps.sh")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree")
    ap.add_argument("--copy-of", default="/usr/share/doc")
    ap.add_argument("--wimguard", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "wimguard"))
    args = ap.parse_args()
    wg = os.path.abspath(args.wimguard)
    if not os.access(wg, os.X_OK):
        sys.exit(f"{wg} not found: build it with `cargo build --release`")
    if shutil.which("restic") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            subprocess.run(["apt-get", "install", "-y", "-qq", "restic"], check=True, stdout=subprocess.DEVNULL)
        else:
            sys.exit("restic not found: apt-get install restic")
    work = tempfile.mkdtemp(prefix="wimguard-remote-bench-")
    procs = []
    try:
        tree = args.tree
        if tree is None:
            tree = os.path.join(work, "tree")
            subprocess.run(["cp", "-a", args.copy_of, tree], check=True)
        subprocess.run(["tar", "cf", "/dev/null", tree], check=True)
        data = os.path.join(work, "s3")
        os.makedirs(os.path.join(data, BUCKET))
        port = free_port()
        procs.append(subprocess.Popen([s3s_fs(), "--host", "127.0.0.1", "--port", str(port), "--access-key", KEY,
                                       "--secret-key", SECRET, data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port, "s3s-fs")
        endpoint = f"http://127.0.0.1:{port}"
        results = {}

        # restic
        renv = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, RESTIC_PASSWORD="bench",
                    RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"))
        repo = f"s3:{endpoint}/{BUCKET}/restic"
        run(["restic", "-r", repo, "init"], renv)
        base = du(os.path.join(data, BUCKET))
        t1 = run(["restic", "-r", repo, "backup", tree, "-q"], renv)
        b1 = du(os.path.join(data, BUCKET)) - base
        restic_tree = os.path.join(work, "tree-restic")
        subprocess.run(["cp", "-a", tree, restic_tree], check=True)

        # wimguard
        home = os.path.join(work, "home")
        os.makedirs(home)
        with open(os.path.join(home, "config.yaml"), "w") as f:
            f.write(f"appSecret: bench\nplugins:\n  s3-upload:\n    settings: {{ endpoint: \"{endpoint}\", bucket: \"{BUCKET}\", "
                    f"prefix: \"wimguard\" }}\n    secrets: {{ accessKeyId: BENCH_KEY, secretAccessKey: BENCH_SECRET }}\n"
                    f"    allowedHosts: [\"127.0.0.1:{port}\"]\n")
        wenv = dict(os.environ, BENCH_KEY=KEY, BENCH_SECRET=SECRET, WIMGUARD_LOG="warn")
        procs.append(subprocess.Popen([wg, "server", "--home", home, "--port", "0"], env=wenv,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        t0 = time.monotonic()
        while subprocess.run([wg, "health", "--home", home], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
            if time.monotonic() - t0 > 60:
                sys.exit("wimguard server did not start")
            time.sleep(0.1)
        before = du(os.path.join(data, BUCKET, "wimguard")) if os.path.isdir(os.path.join(data, BUCKET, "wimguard")) else 0
        w1 = run([wg, "backup", "--home", home, "--source", tree, "--destination", "bench", "--plugin", "s3-upload"], wenv)
        wb1 = du(os.path.join(data, BUCKET, "wimguard")) - before

        changed = change_one_percent(tree)
        change_one_percent(restic_tree)
        mid = du(os.path.join(data, BUCKET, "restic"))
        t2 = run(["restic", "-r", repo, "backup", restic_tree, "-q"], renv)
        b2 = du(os.path.join(data, BUCKET, "restic")) - mid
        mid = du(os.path.join(data, BUCKET, "wimguard"))
        w2 = run([wg, "backup", "--home", home, "--source", tree, "--destination", "bench", "--plugin", "s3-upload"], wenv)
        wb2 = du(os.path.join(data, BUCKET, "wimguard")) - mid

        print(f"tree: {tree} ({du(tree) / 1e6:.1f} MB); second backup after changing {changed} files (1 %)")
        print(f"{'step':34} {'restic':>12} {'wimguard':>12} {'ratio':>7}")
        for name, r, w in [("first backup, seconds", t1, w1), ("first backup, MB stored", b1 / 1e6, wb1 / 1e6),
                           ("1 % changed, seconds", t2, w2), ("1 % changed, MB added", b2 / 1e6, wb2 / 1e6)]:
            print(f"{name:34} {r:12.2f} {w:12.2f} {w / r if r else float('nan'):7.2f}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
