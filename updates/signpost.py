"""`signpost`: read and flip the A/B partition flags; create and boot simulated OS disks.

    signpost [--disk PATH] status | mark-successful-boot | clear-inactive | mark-inactive-valid
                           | upgrade-to-inactive | cancel-upgrade | rollback-to-inactive
                           | has-boot-ever-succeeded | rewrite-table
    signpost --disk PATH create-disk [--size BYTES] [--os-version V] [--variant V] [--arch A]
    signpost --disk PATH boot          # the bootloader: pick a set, use a try, print the set
    signpost --disk PATH version       # VERSION_ID of the running set
    signpost [--disk PATH] explain     # versions, flags and the next two boots

Without `--disk` the OS disk is found from the running root (block-party). Usage errors and
failed preconditions print a message on stderr and exit 1, as Bottlerocket's signpost does.
`boot` prints `Set A`, `Set B` or `None` (exit 1: nothing bootable).
"""

from __future__ import annotations

import sys

from updates import gpt, gptprio
from updates.partitions import SET_NAMES, DiskError, OsDisk, create_os_disk, open_os_disk

USAGE = """\
USAGE:
    signpost [--disk PATH] <SUBCOMMAND>

SUBCOMMANDS:
    status                  Show partition sets and priority status
    mark-successful-boot    Mark the active partitions as successfully booted
    clear-inactive          Clears inactive priority information to prepare writing images
    mark-inactive-valid     Sets the inactive partitions as new upgrade partitions
    upgrade-to-inactive     Sets the inactive partitions as new upgrade partitions, if valid
    cancel-upgrade          Reverse upgrade-to-inactive
    rollback-to-inactive    Deprioritizes the active partitions to boot the inactive ones
    has-boot-ever-succeeded Print whether any partition set has ever booted successfully
    rewrite-table           Rewrite the partition table with no changes (testing aid)
    create-disk             Create a disk image file (needs --disk)
        [ --size BYTES ] [ --os-version V ] [ --variant V ] [ --arch A ]
    boot                    Simulate the bootloader (needs --disk): prints the booted set
    version                 Print the running set's OS version
    explain                 Each set's version and gptprio bits, and the next two boots
                            the bootloader would make (fallback included)

OPTIONS:
    [ --disk PATH ]         OS disk or disk image (default: the disk behind /)
"""

DEFAULT_SIZE = 8 << 20
VERBS = (*gptprio.OPERATIONS, "status", "has-boot-ever-succeeded", "rewrite-table",
         "create-disk", "boot", "version", "explain")
_VALUED = {"--disk": "disk", "--size": "size", "--os-version": "version", "--variant": "variant",
           "--arch": "arch"}


class UsageError(Exception):
    pass


def parse(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        if arg in _VALUED:
            value = next(it, None)
            if value is None:
                raise UsageError(f"{arg} needs a value")
            opts[_VALUED[arg]] = value
        elif arg in ("-h", "--help"):
            opts["help"] = "1"
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}")
        elif "verb" in opts:
            raise UsageError(f"unexpected argument {arg!r}")
        else:
            opts["verb"] = arg
    verb = opts.get("verb")
    if "help" in opts:
        return opts
    if verb not in VERBS:
        raise UsageError("missing subcommand" if verb is None else f"unknown subcommand {verb!r}")
    if verb in ("create-disk", "boot") and "disk" not in opts:
        raise UsageError(f"{verb} needs --disk PATH")
    extra = set(opts) & {"size", "version", "variant", "arch"}
    if extra and verb != "create-disk":
        raise UsageError(f"--{sorted(extra)[0]} is only for create-disk")
    if "size" in opts and not opts["size"].isdigit():
        raise UsageError("--size must be a number of bytes")
    return opts


def run(opts: dict[str, str]) -> int:
    verb = opts["verb"]
    if verb == "create-disk":
        create_os_disk(opts["disk"], int(opts.get("size", DEFAULT_SIZE)),
                       version=opts.get("version", "1.0.0"),
                       variant=opts.get("variant", "aws-dev"), arch=opts.get("arch"))
        return 0
    writable = verb not in ("status", "has-boot-ever-succeeded", "version", "explain")
    with open_os_disk(opts.get("disk"), writable=writable) as disk:
        if verb == "status":
            print(disk.status_text())
        elif verb == "boot":
            booted = disk.boot()
            print(f"Set {booted}" if booted else "None")
            if booted is None:
                print("signpost: no such partition: nothing is bootable", file=sys.stderr)
                return 1
        elif verb == "version":
            version = disk.running_version()
            if version is None:
                print("signpost: the running set's root holds no OS image header",
                      file=sys.stderr)
                return 1
            print(version)
        elif verb == "explain":
            print(explain(disk))
        elif verb == "has-boot-ever-succeeded":
            print(str(gptprio.has_boot_ever_succeeded(disk.state())).lower())
        elif verb == "rewrite-table":
            disk.write_table(disk.table)
        else:
            disk.apply(verb)
    return 0


def explain(disk: OsDisk) -> str:
    """Versions, gptprio bits, and what the bootloader does at the next two boots."""
    lines = []
    for name in SET_NAMES:
        version = (disk.identity(name) or {}).get("VERSION_ID", "(no OS image)")
        lines.append(f"Set {name}:  {version:<14} {disk.flags(name).describe()}")
    lines.append(f"Active:  Set {disk.active or '?'}")
    boots = [(n, e) for n, e in disk.table.partitions() if e.type_guid == gpt.BOOT_TYPE]
    names = {s.boot: s.name for s in disk.sets.values()}
    first, if_marked, if_not = gptprio.next_two_boots(
        [gptprio.decode(e.attributes) for _, e in boots])

    def label(index: int | None) -> str:
        return "None (nothing bootable)" if index is None else f"Set {names[boots[index][0]]}"

    if first is None:
        lines.append("Next boot:       None (nothing bootable)")
        return "\n".join(lines)
    chosen = gptprio.decode(boots[first][1].attributes)
    note = " (uses its last try)" if chosen.tries_left == 1 and not chosen.successful else ""
    lines.append(f"Next boot:       {label(first)}{note}")
    if if_marked == if_not:
        lines.append(f"Boot after that: {label(if_marked)}")
    else:
        lines.append(f"Boot after that: {label(if_marked)} if that boot is marked successful, "
                     f"otherwise {label(if_not)} (fallback)")
    return "\n".join(lines)


def verb_help(verb: str) -> str:
    """The usage lines of one subcommand, for `signpost VERB --help`."""
    lines = USAGE.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().split(" ")[0] == verb), None)
    if start is None:
        return USAGE
    picked = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("        "):
            break
        picked.append(line)
    return f"USAGE:\n    signpost [--disk PATH] {verb}\n\n" + "\n".join(picked) + \
        "\n\nOPTIONS:\n    [ --disk PATH ]         OS disk or disk image (default: the disk " \
        "behind /)\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["help"] or "-h" in argv or "--help" in argv:  # also `updog update --help`
        print(USAGE)
        return 0
    try:
        opts = parse(argv)
    except UsageError as e:
        print(f"signpost: {e}\n\n{USAGE}", file=sys.stderr)
        return 1
    if "help" in opts:
        print(verb_help(opts["verb"]) if opts.get("verb") in VERBS else USAGE)
        return 0
    try:
        return run(opts)
    except (gptprio.SignpostError, DiskError, gpt.GptError, OSError) as e:
        print(f"signpost: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
