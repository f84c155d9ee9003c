"""dexec_shared_library: one .so holding the whole of some cc_libraries.

Bazel 4.2.3's cc_binary(linkshared) links its deps lazily (--start-lib), so
a library nothing in the link calls into comes out empty, and it has no
cc_shared_library. This rule links every static archive in the deps'
closure with --whole-archive, and the deps' link flags (Debian's -l
libraries) as DT_NEEDED entries. --no-undefined turns a missing library
into a build error here rather than a link error for our users. Only our
own symbols are exported (exports.map).
"""

def _dexec_shared_library_impl(ctx):
    archives = []
    flags = []
    seen_flags = {}
    for dep in ctx.attr.deps:
        for linker_input in dep[CcInfo].linking_context.linker_inputs.to_list():
            for lib in linker_input.libraries:
                archive = lib.pic_static_library or lib.static_library
                if archive != None and archive not in archives:
                    archives.append(archive)
            for flag in linker_input.user_link_flags:
                if flag not in seen_flags:
                    seen_flags[flag] = True
                    flags.append(flag)

    out = ctx.actions.declare_file(ctx.attr.name)
    args = ctx.actions.args()
    args.add("-shared")
    args.add("-B/usr/bin")  # the action's PATH may not lead to ld
    args.add("-o", out)
    args.add("-Wl,-soname," + ctx.attr.name)
    args.add("-Wl,--no-undefined")
    args.add("-Wl,--version-script=" + ctx.file.exports.path)
    args.add("-Wl,-z,relro,-z,now")
    args.add("-Wl,--whole-archive")
    args.add_all(archives)
    args.add("-Wl,--no-whole-archive")
    args.add_all(flags)

    # --linkopt values, e.g. -fsanitize=address under --config=asan.
    args.add_all(ctx.fragments.cpp.linkopts)
    args.add_all(["-lstdc++", "-lm"])
    ctx.actions.run(
        executable = "/usr/bin/g++",
        arguments = [args],
        inputs = archives + [ctx.file.exports],
        outputs = [out],
        mnemonic = "DexecSharedLibrary",
        progress_message = "Linking %s" % out.short_path,
    )
    return [DefaultInfo(files = depset([out]))]

dexec_shared_library = rule(
    implementation = _dexec_shared_library_impl,
    attrs = {
        "deps": attr.label_list(providers = [CcInfo]),
        # A linker version script: which symbols the library exports.
        "exports": attr.label(
            default = ":exports.map",
            allow_single_file = True,
        ),
    },
    fragments = ["cpp"],
)
