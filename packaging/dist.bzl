"""dexec_dist: the install tree of dexec as one tar file (`make install`).

Prefix-independent: the pkg-config files find their prefix from
${pcfiledir} and the CMake package from its own location, so installing is
unpacking the tar into PREFIX.
"""

def _dexec_dist_impl(ctx):
    entries = []  # "DEST=SRC", DEST relative to the prefix
    inputs = []

    for target in ctx.attr.bins:
        exe = target[DefaultInfo].files_to_run.executable
        entries.append("bin/%s=%s" % (exe.basename, exe.path))
        inputs.append(exe)
    for f in ctx.files.libs:
        if f.basename.endswith(".so"):
            entries.append("lib/%s=%s" % (f.basename, f.path))
            inputs.append(f)

    # Every header the libraries' users may reach, including generated
    # .pb.h files, at the path our own #includes use ("client/executor.h"),
    # under include/dexec so that "common/..." cannot clash with another
    # project's.
    headers = depset(transitive = [
        d[CcInfo].compilation_context.headers
        for d in ctx.attr.headers_of
    ])
    for h in headers.to_list():
        if h.short_path.startswith("../") or h.path.startswith("external/"):
            continue
        entries.append("include/dexec/%s=%s" % (h.short_path, h.path))
        inputs.append(h)

    for f in ctx.files.pkgconfig:
        entries.append("lib/pkgconfig/%s=%s" % (f.basename, f.path))
        inputs.append(f)
    for f in ctx.files.cmake:
        entries.append("lib/cmake/dexec/%s=%s" % (f.basename, f.path))
        inputs.append(f)
    for f in ctx.files.systemd:
        entries.append("lib/systemd/system/%s=%s" % (f.basename, f.path))
        inputs.append(f)
    if ctx.file.sysusers:
        entries.append("lib/sysusers.d/dexec.conf=%s" % ctx.file.sysusers.path)
        inputs.append(ctx.file.sysusers)

    out = ctx.actions.declare_file(ctx.attr.name + ".tar")
    args = ctx.actions.args()
    args.add(out.path)
    args.add_all(entries)
    ctx.actions.run(
        executable = ctx.executable._make_dist,
        arguments = [args],
        inputs = inputs,
        outputs = [out],
        mnemonic = "DexecDist",
        progress_message = "Packing the dexec install tree",
    )
    return [DefaultInfo(
        files = depset([out]),
        runfiles = ctx.runfiles(files = [out]),
    )]

dexec_dist = rule(
    implementation = _dexec_dist_impl,
    attrs = {
        "bins": attr.label_list(cfg = "target"),
        "libs": attr.label_list(allow_files = True),
        "headers_of": attr.label_list(providers = [CcInfo]),
        "pkgconfig": attr.label_list(allow_files = [".pc"]),
        "cmake": attr.label_list(allow_files = [".cmake"]),
        "systemd": attr.label_list(allow_files = [".service"]),
        "sysusers": attr.label(allow_single_file = [".conf"]),
        "_make_dist": attr.label(
            default = ":make_dist.sh",
            executable = True,
            allow_single_file = True,
            cfg = "exec",
        ),
    },
)
