#!/usr/bin/env python3
"""Helpers of launch/gpu-kit (standard library only, Python 3.8+).

  kit.py resolve ROOTS... -- the Debian packages the kit holds: the Depends/Pre-Depends closure of
         ROOTS by `apt-cache depends` (candidate versions of the machine's apt sources), stopping
         at the packages a bare GPU node is assumed to have (BASELINE) and at those nothing we build
         or run needs (PRUNED). Prints one package name a line; --explain prints why each is in.
  kit.py manifest KIT -- writes KIT/manifest.json and KIT/MANIFEST.txt from KIT/debs/*.deb
         (package, version, architecture, file, size, sha256), the roots, the baseline and the
         pruned packages with their reasons.
  kit.py verify KIT -- every file of the manifest is there with its size and sha256, and no other
         .deb is; exit 1 naming the first file that does not match.
  kit.py step ... / kit.py report ... -- the per-step records of `gpu-kit check` and the JSON
         written from them; gtest, libs, resume-compare, sdxl-summary -- what the check's steps
         read from GoogleTest's JSON, ldd, two training runs, and a dry run with its training run.
"""
import argparse
import datetime
import fnmatch
import hashlib
import json
import os
import platform
import re
import subprocess
import sys

# What `gpu-kit check` builds and runs against: the build's find_package/find_path/find_library
# calls (cmake/LookaheadDependencies.cmake, data/CMakeLists.txt) and mpirun.
ROOTS = [
    "libopenmpi-dev", "openmpi-bin",            # MPI: mpi.h, libmpi, mpicc (FindMPI), mpirun/orted
    "libhdf5-dev",                              # HDF5 (C), h5cc (FindHDF5 interrogates it)
    "libboost-program-options-dev",             # Boost.Program_options (+ the Boost headers)
    "libgtest-dev", "libbenchmark-dev",         # GoogleTest, Google Benchmark
    "nlohmann-json3-dev", "libxxhash-dev", "libutf8proc-dev",
    "libjpeg-dev", "libpng-dev", "zlib1g-dev",  # data/: JPEG, PNG; zlib (CLIP's BPE vocabulary)
]

# Assumed present on a bare GPU node (an image with CUDA, a C/C++ compiler for nvcc, cmake, ninja
# and Python): the C library and its headers, the compiler's runtime and headers, zlib, OpenMP's
# runtime, and the packages of any Debian/Ubuntu base system. The kit never ships them: a copy
# from another release could shadow the node's own through LD_LIBRARY_PATH.
BASELINE = {
    "the C library and its development files": [
        "libc6", "libc6-dev", "libc-dev", "libc-dev-bin", "linux-libc-dev", "libcrypt1", "libcrypt-dev",
        "libnsl2", "libnsl-dev", "libtirpc3*", "libtirpc-dev", "libtirpc-common", "rpcsvc-proto"],
    "the C/C++ compiler (nvcc's host compiler) and its runtime": [
        "libstdc++6", "libgcc-s1", "gcc-*-base", "libgomp1", "libstdc++-*-dev", "libstdc++-dev", "gcc", "g++", "cpp",
        "gcc-[0-9]*", "g++-[0-9]*", "cpp-[0-9]*", "binutils", "libgcc-*-dev", "libatomic1", "libquadmath0"],
    "zlib (torch's wheel needs it too)": ["zlib1g"],
    "the base system (Essential packages and what they need)": [
        "debconf", "debconf-2.0", "cdebconf", "dpkg", "perl-base", "tar", "coreutils", "debianutils",
        "init-system-helpers", "adduser", "passwd", "login", "libselinux1", "libpcre2-8-0", "libzstd1",
        "liblzma5", "libbz2-1.0", "libmd0", "libacl1", "libattr1", "libaudit1", "libaudit-common", "libcap-ng0",
        "libcap2", "libpam0g", "libpam-modules", "libpam-modules-bin", "libpam-runtime", "libsemanage2",
        "libsemanage-common", "libsepol2", "libbsd0", "libdb5.3", "libsystemd0", "libgcrypt20",
        "libgpg-error0", "liblz4-1", "libuuid1", "libblkid1", "libmount1", "libsmartcols1", "util-linux",
        "sensible-utils", "lsb-base", "sysvinit-utils", "mount"],
}

# Dependencies that Debian declares but that nothing Lookahead builds or runs uses.
PRUNED = {
    "Fortran (Lookahead is C/C++; OpenMPI's and HDF5's Fortran bindings are never loaded)": [
        "gfortran*", "gfortran-mod-*", "fortran-compiler", "fortran95-compiler", "libgfortran*", "flang*",
        "libhdf5-fortran-*", "libhdf5-hl-fortran-*", "libcoarrays*"],
    "OpenMPI's HTML documentation scripts": ["libjs-jquery", "libjs-jquery-ui"],
    "mpirun's remote launch over ssh (one node starts no remote daemons; cluster nodes have their own ssh)": [
        "openssh-client", "ssh-client"],
    "headers of OpenMPI's own dependencies (mpi.h includes none of them; they serve static linking only; "
    "their runtime libraries come in through libopenmpi3 and libpmix2)": [
        "libhwloc-dev", "libevent-dev", "libibverbs-dev", "libpmix-dev"],
    "hwloc's optional plugins (PCI, X11/NV-CONTROL, XML, OpenCL topology): hwloc runs without them, and "
    "they pull in X11, libxml2 and ICU (10 MB)": ["libhwloc-plugins"],
}
# Names above may be shell patterns (gcc-[0-9]*): the same lists serve other Debian and Ubuntu releases.


def _flat(groups):
    out = {}
    for reason, names in groups.items():
        for n in names:
            out[n] = reason
    return out


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _run(args):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout


def apt_depends(names, apt_options):
    """{package: [[alternative, ...], ...]} of Depends and Pre-Depends, virtual names expanded to
    their providers (after the name itself)."""
    out = _run(["apt-cache"] + apt_options + ["depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                                              "--no-breaks", "--no-replaces", "--no-enhances"] + names)
    deps, cur, clause, target = {}, None, [], None
    for line in out.splitlines():
        if not line.startswith(" "):
            cur = line.strip()
            deps[cur], clause, target = [], [], None
            continue
        m = re.match(r"^ (\|| )(?:Pre)?Depends: (.*)$", line)
        if m:
            clause.append(m.group(2).strip().strip("<>"))
            target = clause
            if m.group(1) != "|":  # the last alternative of this clause
                deps[cur].append(clause)
                clause = []
            continue
        m = re.match(r"^    (\S+)$", line)  # a provider of the virtual name on the line above
        if m and target is not None and m.group(1) not in target:
            target.append(m.group(1))
    return deps


def prefetch_candidates(names, apt_options, cache):
    """One `apt-cache policy` for many names: cache[name] = whether it has an installable version."""
    names = [n for n in dict.fromkeys(names) if n not in cache]
    if not names:
        return
    out = _run(["apt-cache"] + apt_options + ["policy"] + names)
    cur = None
    for line in out.splitlines():
        m = re.match(r"^(\S+):$", line)
        if m:
            cur = m.group(1).split(":")[0]
            cache.setdefault(cur, False)
            continue
        m = re.match(r"^\s+Candidate: (\S+)", line)
        if m and cur:
            cache[cur] = m.group(1) != "(none)"
    for n in names:
        cache.setdefault(n, False)


def has_candidate(name, apt_options, cache):
    if name not in cache:
        prefetch_candidates([name], apt_options, cache)
    return cache[name]


def resolve(roots, apt_options):
    baseline, pruned = _flat(BASELINE), _flat(PRUNED)
    chosen, why, queue = [], {}, list(roots)
    for r in roots:
        why[r] = "asked for"
    cand = {}
    while queue:
        batch = [p for p in dict.fromkeys(queue) if p not in chosen]
        queue = []
        if not batch:
            break
        deps = apt_depends(batch, apt_options)
        prefetch_candidates([a for p in batch for clause in deps.get(p, []) for a in clause
                             if not (_matches(a, baseline) or _matches(a, pruned))], apt_options, cand)
        for p in batch:
            if p in chosen:
                continue
            chosen.append(p)
            for clause in deps.get(p, []):
                if any(_matches(a, baseline) or _matches(a, pruned) or a in chosen or a in queue for a in clause):
                    continue
                pick = next((a for a in clause if has_candidate(a, apt_options, cand)), None)
                if pick is None:
                    raise SystemExit("gpu-kit: no installable package for dependency %s of %s" % (" | ".join(clause), p))
                why.setdefault(pick, "needed by " + p)
                queue.append(pick)
    return chosen, why


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def deb_field(path, field):
    return _run(["dpkg-deb", "-f", path, field]).strip()


def write_manifest(kit, why_path):
    debs = sorted(f for f in os.listdir(os.path.join(kit, "debs")) if f.endswith(".deb"))
    why = {}
    if why_path and os.path.exists(why_path):
        with open(why_path) as f:
            why = json.load(f)
    pkgs = []
    for f in debs:
        p = os.path.join(kit, "debs", f)
        name = deb_field(p, "Package")
        pkgs.append({"package": name, "version": deb_field(p, "Version"), "architecture": deb_field(p, "Architecture"),
                     "file": "debs/" + f, "size": os.path.getsize(p), "sha256": sha256(p), "why": why.get(name, "")})
    libc = ""
    try:
        libc = _run(["dpkg-query", "-W", "-f=${Version}", "libc6"]).strip()
    except Exception:
        pass
    release = {}
    if os.path.exists("/etc/os-release"):
        for line in open("/etc/os-release"):
            k, _, v = line.strip().partition("=")
            if k in ("PRETTY_NAME", "VERSION_CODENAME", "ID"):
                release[k.lower()] = v.strip('"')
    # The packages were built against the fetching release's C library: the node's must be at
    # least that version (checked by `gpu-kit check` before anything is unpacked).
    manifest = {
        "format": "lookahead-gpu-kit 1",
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fetched_on": release,
        "architecture": platform.machine(),
        "fetch_libc6": libc,
        "min_glibc": libc.split("-")[0] if libc else "",
        "roots": ROOTS,
        "assumed_on_node": BASELINE,
        "pruned": PRUNED,
        "total_bytes": sum(p["size"] for p in pkgs),
        "packages": pkgs,
    }
    with open(os.path.join(kit, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    with open(os.path.join(kit, "MANIFEST.txt"), "w") as f:
        f.write("# Lookahead GPU kit: %d Debian packages, %.1f MiB, fetched %s on %s (libc6 %s)\n" %
                (len(pkgs), manifest["total_bytes"] / 1048576.0, manifest["created"],
                 release.get("pretty_name", "?"), libc))
        f.write("# package version architecture size sha256 file\n")
        for p in pkgs:
            f.write("%s %s %s %d %s %s\n" % (p["package"], p["version"], p["architecture"], p["size"], p["sha256"],
                                             p["file"]))
    return manifest


def verify(kit):
    mpath = os.path.join(kit, "manifest.json")
    if not os.path.exists(mpath):
        print("gpu-kit: no kit at %s (no manifest.json): run `launch/gpu-kit fetch` on a connected machine and copy "
              "the folder here" % kit, file=sys.stderr)
        return 1
    try:
        with open(mpath) as f:
            m = json.load(f)
    except ValueError as e:
        print("gpu-kit: %s is not valid JSON (%s): the kit is damaged; fetch it again" % (mpath, e), file=sys.stderr)
        return 1
    if m.get("format") != "lookahead-gpu-kit 1":
        print("gpu-kit: %s: unknown format %r" % (mpath, m.get("format")), file=sys.stderr)
        return 1
    listed = set()
    for p in m["packages"]:
        path = os.path.join(kit, p["file"])
        listed.add(os.path.normpath(path))
        if not os.path.isfile(path):
            print("gpu-kit: kit does not match its manifest: %s is missing (%s %s)" % (path, p["package"], p["version"]),
                  file=sys.stderr)
            return 1
        size = os.path.getsize(path)
        if size != p["size"]:
            print("gpu-kit: kit does not match its manifest: %s is %d bytes, the manifest says %d" % (path, size, p["size"]),
                  file=sys.stderr)
            return 1
        digest = sha256(path)
        if digest != p["sha256"]:
            print("gpu-kit: kit does not match its manifest: %s has sha256 %s, the manifest says %s" %
                  (path, digest, p["sha256"]), file=sys.stderr)
            return 1
    debs = os.path.join(kit, "debs")
    extra = sorted(f for f in os.listdir(debs) if f.endswith(".deb") and os.path.normpath(os.path.join(debs, f)) not in listed)
    if extra:
        print("gpu-kit: kit does not match its manifest: %s is not in it" % os.path.join(debs, extra[0]), file=sys.stderr)
        return 1
    print("gpu-kit: kit verified: %d packages, %.1f MiB, sha256 of each as in %s" %
          (len(m["packages"]), m["total_bytes"] / 1048576.0, mpath))
    return 0


# ---- the check's records ---------------------------------------------------------------------------
# Each step appends one JSON line to STEPS (kit.py step); kit.py report rewrites OUT/gpu-check.json
# from them after every step, so that a check stopped half-way still leaves its JSON.

def step(args):
    rec = {"name": args.name, "status": args.status, "seconds": round(args.seconds, 1)}
    if args.reason:
        rec["reason"] = args.reason
    if args.command:
        rec["command"] = args.command
    for kv in args.detail or []:
        k, _, v = kv.partition("=")
        rec.setdefault("details", {})[k] = v
    for path in args.detail_json or []:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            try:
                with open(path) as f:
                    rec.setdefault("details", {}).update(json.load(f))
            except ValueError as e:
                rec.setdefault("details", {})["detail_error"] = "%s: %s" % (path, e)
    with open(args.steps, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


def report(args):
    steps = []
    if os.path.exists(args.steps):
        with open(args.steps) as f:
            steps = [json.loads(l) for l in f if l.strip()]
    info = {}
    if args.info and os.path.exists(args.info):
        with open(args.info) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                if k:
                    info[k] = v
    summary = {s: [r["name"] for r in steps if r["status"] == s] for s in ("passed", "failed", "skipped")}
    out = {
        "format": "lookahead-gpu-check 1",
        "finished": args.finished == "true",
        "seconds_total": round(float(args.total), 1),
        "environment": info,
        "summary": {k: len(v) for k, v in summary.items()},
        "passed": summary["passed"],
        "failed": summary["failed"],
        "skipped": summary["skipped"],
        "steps": steps,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    return 0


def gtest_summary(args):
    """GoogleTest's --gtest_output=json report -> counts and the names of failed and skipped tests."""
    with open(args.file) as f:
        g = json.load(f)
    failed, skipped, ran = [], [], 0
    for suite in g.get("testsuites", []):
        for t in suite.get("testsuite", []):
            name = "%s.%s" % (suite.get("name", "?"), t.get("name", "?"))
            if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                msg = ""
                for fl in t.get("failures", []) or []:
                    msg = fl.get("failure", "")
                skipped.append(name + ((": " + msg.strip().splitlines()[-1]) if msg.strip() else ""))
            elif t.get("failures"):
                failed.append(name)
            else:
                ran += 1
    print(json.dumps({"tests": g.get("tests", 0), "passed": ran, "failed": len(failed), "skipped": len(skipped),
                      "failed_tests": failed, "skipped_tests": skipped, "gtest_seconds": g.get("time", "")}))
    return 0


def _metrics(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def resume_compare(args):
    """Steps of the resumed run B against the uninterrupted run A: bit-identical, or within a relative
    tolerance (GPU kernels may reduce in another order after a restart); the exported files."""
    out = {}
    try:
        a = {m["step"]: m for m in _metrics(os.path.join(args.a, "metrics.jsonl"))}
        b = _metrics(os.path.join(args.b, "metrics.jsonl"))
        keys = ("loss_diffusion", "loss_lookahead", "grad_norm", "alpha")
        worst, exact = 0.0, True
        for m in b:
            ref = a.get(m["step"])
            if ref is None:
                raise ValueError("resumed step %s is not in the uninterrupted run" % m["step"])
            for k in keys:
                if k not in m or k not in ref:
                    continue
                if m[k] != ref[k]:
                    exact = False
                    rel = abs(m[k] - ref[k]) / max(abs(ref[k]), 1e-30)
                    worst = max(worst, rel)
        out["resumed_steps"] = [m["step"] for m in b]
        out["worst_relative_difference"] = worst
        out["tolerance"] = args.tolerance
        files = {}
        for f in ("ip_adapter.safetensors", "kv_encoder.safetensors"):
            pa, pb = os.path.join(args.a, "export", f), os.path.join(args.b, "export", f)
            pe = os.path.join(args.export, f)
            same = lambda x, y: os.path.exists(x) and os.path.exists(y) and open(x, "rb").read() == open(y, "rb").read()
            files[f] = {"resumed_run_identical": same(pa, pb), "export_command_identical": same(pa, pe)}
        out["exports"] = files
        evals = [os.path.join(d, f) for d, _, fs in os.walk(args.eval) for f in fs if f == "metrics.json"]
        if not evals:
            raise ValueError("eval wrote no metrics.json under %s" % args.eval)
        with open(evals[0]) as f:
            em = json.load(f)
        out["eval_metrics"] = {k: v for k, v in em.items() if isinstance(v, (int, float))} if isinstance(em, dict) else {}
        if not out["resumed_steps"]:
            raise ValueError("the resumed run logged no step")
        if exact:
            out["resume"] = "bit-identical"
        elif worst <= args.tolerance:
            out["resume"] = "within %g relative (worst %.2e), not bit-identical" % (args.tolerance, worst)
        else:
            raise ValueError("resumed steps differ by %.2e relative, over the tolerance %g" % (worst, args.tolerance))
        if not all(v["export_command_identical"] for v in files.values()):
            raise ValueError("lookahead export of the last checkpoint differs from the run's own export")
    except (OSError, ValueError, KeyError) as e:
        out["error"] = str(e)
        print(json.dumps(out))
        return 1
    print(json.dumps(out))
    return 0


# Dense bf16 tensor-core peaks (TFLOP/s, the vendors' data sheets; sparsity not counted), matched
# against the device name. LOOKAHEAD_GPU_PEAK_TFLOPS overrides.
PEAK_BF16_TFLOPS = [("H200", 989.4), ("H100 SXM", 989.4), ("H100 80GB HBM3", 989.4), ("H100 NVL", 835.0),
                    ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4), ("B200", 2250.0), ("A100", 312.0),
                    ("L40S", 362.1), ("L4", 121.0), ("A10G", 70.0), ("RTX 6000 Ada", 364.2)]


def sdxl_summary(args):
    dry = open(args.dry).read()
    pred = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.e+]+)", next(
        (l for l in dry.splitlines() if l.startswith("predicted bytes per rank:")), ""))}
    flops = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.e+]+)", next(
        (l for l in dry.splitlines() if l.startswith("predicted flops per step:")), ""))}
    m = _metrics(args.metrics)
    if len(m) < 2:
        raise SystemExit("need at least 2 logged steps, got %d" % len(m))
    measured = m[1:]  # step 0 warms up (allocator, cuDNN/cuBLAS autotuning)

    def median(k):
        v = sorted(x[k] for x in measured if k in x)
        return v[len(v) // 2] if v else None

    phases = {k: median(k) for k in ("time_step_s", "time_data_s", "time_compute_s", "time_diffusion_s",
                                      "time_lookahead_s", "time_optimizer_s", "time_gather_wait_s",
                                      "time_reduce_wait_s")}
    step_s = phases["time_step_s"]
    gib = float(1 << 30)
    out = {"batch": args.batch, "steps_measured": [x["step"] for x in measured], "median_s": phases,
           "predicted_flops_per_step": flops}
    total_flops = flops.get("forward", 0) + flops.get("backward", 0) + flops.get("recompute", 0)
    model_flops = flops.get("forward", 0) + flops.get("backward", 0)
    peak = os.environ.get("LOOKAHEAD_GPU_PEAK_TFLOPS")
    peak_src = "LOOKAHEAD_GPU_PEAK_TFLOPS"
    if not peak:
        peak = next((p for name, p in PEAK_BF16_TFLOPS if name in args.gpu), None)
        peak_src = "data sheet, dense bf16 (%s)" % args.gpu if peak else ""
    if step_s:
        out["achieved_tflops"] = model_flops / step_s / 1e12
        out["achieved_tflops_with_recompute"] = total_flops / step_s / 1e12
        if peak:
            out["peak_tflops"] = float(peak)
            out["peak_source"] = peak_src
            out["mfu"] = model_flops / step_s / (float(peak) * 1e12)
            out["hfu"] = total_flops / step_s / (float(peak) * 1e12)
        else:
            out["mfu"] = None
            out["mfu_note"] = "no bf16 peak known for '%s' (set LOOKAHEAD_GPU_PEAK_TFLOPS)" % args.gpu
    # Memory: the model's prediction (tensors per phase + libraries) beside the driver's view.
    tensors = {k: v for k, v in pred.items() if k.startswith("mem_tensor")}
    if tensors:
        out["predicted_gib"] = {k[len("mem_tensor_peak_"):-len("_bytes")]: v / gib for k, v in tensors.items()}
        out["predicted_tensor_peak_gib"] = max(tensors.values()) / gib
    last = m[-1]
    out["engine_gib"] = {k[4:-6]: last[k] / gib for k in ("mem_frozen_shard_bytes", "mem_trainable_shard_bytes",
                                                          "mem_optimizer_bytes", "mem_peak_gathered_bytes") if k in last}
    out["rss_peak_gib"] = last.get("mem_rss_peak_bytes", 0) / gib

    def smi(path):
        rows = []
        if path and os.path.exists(path):
            for line in open(path):
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0].isdigit():
                    rows.append((int(parts[0]), int(parts[1])))
        return rows
    rows, idle = smi(args.smi), smi(args.smi_idle)
    if rows:
        used = max(r[0] for r in rows) / 1024.0
        base = idle[0][0] / 1024.0 if idle else 0.0
        out["gpu_used_peak_gib"] = used
        out["gpu_used_idle_gib"] = base
        out["gpu_total_gib"] = rows[0][1] / 1024.0
        out["gpu_memory_source"] = "nvidia-smi memory.used every 100 ms (the driver's used = total - free, as cudaMemGetInfo)"
        if tensors:
            out["predicted_over_measured"] = (max(tensors.values()) / gib) / max(used - base, 1e-9)
    else:
        out["gpu_memory_note"] = "no nvidia-smi samples"
    # The trainer's own view on a GPU (trainer/cuda_memory.h): the caching allocator's peaks of each
    # step (max over ranks), cudaMemGetInfo's free at each step's end (min over ranks). Every logged
    # step counts: the first one's allocations (cuBLAS workspaces, ...) are memory the run needs too.
    cuda = [x for x in m if "mem_cuda_peak_allocated_bytes" in x]
    if cuda:
        out["cuda_peak_allocated_gib"] = max(x["mem_cuda_peak_allocated_bytes"] for x in cuda) / gib
        out["cuda_peak_reserved_gib"] = max(x.get("mem_cuda_peak_reserved_bytes", 0) for x in cuda) / gib
        out["cuda_free_min_gib"] = min(x.get("mem_cuda_free_bytes", 0) for x in cuda) / gib
        out["cuda_total_gib"] = cuda[-1].get("mem_cuda_total_bytes", 0) / gib
        out["caching_allocator"] = ("metrics.jsonl mem_cuda_*: the CUDA caching allocator's peak allocated and "
                                    "reserved bytes per step, cudaMemGetInfo's free and total at the step's end")
        if tensors:
            out["predicted_over_allocated"] = (max(tensors.values()) / gib) / max(out["cuda_peak_allocated_gib"], 1e-9)
    else:
        out["caching_allocator"] = "no mem_cuda_* values in metrics.jsonl (the run was not on a CUDA device)"
    line = "batch %d: step %.3f s (diffusion %.3f, lookahead %.3f, optimizer %.3f)" % (
        args.batch, step_s or 0, phases["time_diffusion_s"] or 0, phases["time_lookahead_s"] or 0,
        phases["time_optimizer_s"] or 0)
    if out.get("mfu") is not None:
        line += ", MFU %.1f %%" % (100 * out["mfu"])
    if "cuda_peak_allocated_gib" in out:
        line += ", allocator peak %.1f GiB (reserved %.1f)" % (out["cuda_peak_allocated_gib"],
                                                              out["cuda_peak_reserved_gib"])
    if "gpu_used_peak_gib" in out:
        line += ", GPU memory %.1f GiB used (idle %.1f)" % (out["gpu_used_peak_gib"], out["gpu_used_idle_gib"])
    if tensors:
        line += ", predicted tensor peak %.1f GiB" % out["predicted_tensor_peak_gib"]
    out["line"] = line
    print(json.dumps(out))
    return 0


# Libraries a binary may take from the node itself: the C library, the compiler's runtime, zlib, and
# zstd (libcurl's, under HDF5; dpkg itself needs it on every Debian and Ubuntu release since 2021).
NODE_LIBS = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libresolv.so.2", "libutil.so.1",
             "ld-linux-x86-64.so.2", "libstdc++.so.6", "libgcc_s.so.1", "libz.so.1", "libgomp.so.1", "libatomic.so.1",
             "libzstd.so.1"}


def libs(args):
    """ldd of each binary: every library must come from the prefix, torch's wheels (ALLOW dirs) or
    the node's C/C++ runtime and zlib (NODE_LIBS)."""
    prefix = os.path.realpath(args.prefix)
    allow = [os.path.realpath(a) for a in args.allow]
    report, bad = {}, []
    for b in args.binaries:
        if not os.path.exists(b):
            continue
        out = subprocess.run(["ldd", b], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True).stdout
        counts = {"kit": 0, "torch/CUDA": 0, "node": 0}
        for line in out.splitlines():
            m = re.match(r"^\s*(\S+) => (\S+|not found)", line)
            if not m:
                continue
            name, path = m.group(1), m.group(2)
            if path == "not found":
                bad.append("%s: %s not found" % (os.path.basename(b), name))
                continue
            real = os.path.realpath(path)
            if real.startswith(prefix + os.sep) or path.startswith(prefix + os.sep):
                counts["kit"] += 1
            elif any(real.startswith(a + os.sep) or path.startswith(a + os.sep) for a in allow):
                counts["torch/CUDA"] += 1
            elif name in NODE_LIBS:
                counts["node"] += 1
            else:
                bad.append("%s: %s from %s (neither the kit, torch nor the node's C/C++ runtime)" %
                           (os.path.basename(b), name, path))
        report[os.path.basename(b)] = counts
    print(json.dumps({"libraries": report, "outside": bad}))
    for k, v in report.items():
        print("  %-28s %d from the kit, %d from torch/CUDA, %d from the node (C/C++ runtime, zlib)" %
              (k, v["kit"], v["torch/CUDA"], v["node"]), file=sys.stderr)
    for line in bad:
        print("  " + line, file=sys.stderr)
    return 1 if bad or not report else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("resolve")
    r.add_argument("--apt-option", action="append", default=[], help="passed to apt-cache as -o VALUE")
    r.add_argument("--why-json", help="write {package: why} here")
    r.add_argument("roots", nargs="*")
    m = sub.add_parser("manifest")
    m.add_argument("kit")
    m.add_argument("--why-json")
    v = sub.add_parser("verify")
    v.add_argument("kit")
    s = sub.add_parser("step")
    s.add_argument("--steps", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--status", required=True, choices=["passed", "failed", "skipped"])
    s.add_argument("--seconds", type=float, default=0.0)
    s.add_argument("--reason", default="")
    s.add_argument("--command", default="")
    s.add_argument("--detail", action="append", help="KEY=VALUE")
    s.add_argument("--detail-json", action="append", help="a JSON object file merged into details")
    p = sub.add_parser("report")
    p.add_argument("--steps", required=True)
    p.add_argument("--info")
    p.add_argument("--out", required=True)
    p.add_argument("--total", default="0")
    p.add_argument("--finished", default="false")
    g = sub.add_parser("gtest")
    g.add_argument("file")
    c = sub.add_parser("resume-compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("export")
    c.add_argument("eval")
    c.add_argument("--tolerance", type=float, default=1e-5)
    d = sub.add_parser("sdxl-summary")
    d.add_argument("--dry", required=True)
    d.add_argument("--metrics", required=True)
    d.add_argument("--smi")
    d.add_argument("--smi-idle")
    d.add_argument("--gpu", default="")
    d.add_argument("--batch", type=int, required=True)
    lb = sub.add_parser("libs")
    lb.add_argument("--prefix", required=True)
    lb.add_argument("--allow", action="append", default=[])
    lb.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    if args.cmd == "libs":
        return libs(args)
    if args.cmd == "gtest":
        return gtest_summary(args)
    if args.cmd == "resume-compare":
        return resume_compare(args)
    if args.cmd == "sdxl-summary":
        return sdxl_summary(args)
    if args.cmd == "resolve":
        opts = []
        for o in args.apt_option:
            opts += ["-o", o]
        chosen, why = resolve(args.roots or ROOTS, opts)
        if args.why_json:
            with open(args.why_json, "w") as f:
                json.dump(why, f, indent=1)
        print("\n".join(chosen))
        return 0
    if args.cmd == "manifest":
        write_manifest(args.kit, args.why_json)
        return 0
    if args.cmd == "verify":
        return verify(args.kit)
    if args.cmd == "step":
        return step(args)
    if args.cmd == "report":
        return report(args)
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
