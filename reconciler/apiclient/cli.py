"""``apiclient``'s entry point: parse the command line, run the subcommand, map errors to exit
statuses (1 for a failure the server or the host reported, 2 for a bad command line)."""

from __future__ import annotations

import sys

from reconciler.apiclient import arguments
from reconciler.apiclient.transport import Client, ClientError, ResponseError, socket_path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        arguments.build_parser().print_help(sys.stderr)
        return 2
    try:
        argv = arguments.with_default_subcommand(argv)
    except ClientError as error:
        print(str(error), file=sys.stderr)
        return 2
    args = arguments.plain_get(argv) or arguments.build_parser(
        arguments.subcommand_of(argv)).parse_args(argv)
    if getattr(args, "version", False):
        print(f"apiclient {arguments.version()}")
        return 0
    if args.command is None:
        arguments.build_parser().print_help(sys.stderr)
        return 2
    verbose = getattr(args, "verbose", 0) or 0
    client = Client(socket_path(getattr(args, "socket_path", None)), verbose)
    from reconciler.apiclient import commands

    handler = getattr(commands, "cmd_" + args.command.replace("-", "_"))
    try:
        return handler(client, args)
    except ResponseError as error:  # the raw form keeps Bottlerocket's wording, byte for byte
        print(str(error) if args.command == "raw" else error.reason(verbose), file=sys.stderr)
        return 1
    except ClientError as error:
        print(str(error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    finally:
        client.close()
