"""`python -m tasker_core worker --namespace NS --import myapp.handlers`: a worker process.
Ctrl-C or SIGTERM drains in-flight steps and exits."""

import argparse
import importlib
import sys

from . import configure
from .worker import Worker


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tasker_core")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run a worker serving Python handlers")
    worker.add_argument("--namespace", action="append", dest="namespaces",
                        help="namespace to serve (repeatable; default: every namespace of the templates)")
    worker.add_argument("--import", action="append", dest="imports", default=[],
                        help="module to import first, e.g. one that registers handlers (repeatable)")
    worker.add_argument("--concurrency", type=int, default=10, help="handler threads (default 10)")
    worker.add_argument("--orchestration", choices=["external", "embedded"], default="external",
                        help="embedded: also run orchestration in this process")
    worker.add_argument("--template-path", help="template directories, colon-separated "
                        "(default: TASKER_TEMPLATE_PATH, else config/tasks)")
    args = parser.parse_args(argv)

    if args.template_path:
        configure(template_path=args.template_path)
    for module in args.imports:
        importlib.import_module(module)
    running = Worker.start(namespaces=args.namespaces, concurrency=args.concurrency,
                           orchestration=args.orchestration)
    print(f"tasker_core worker {running.worker_id} serving {', '.join(running.namespaces)} "
          f"with {running.concurrency} threads; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        running.wait()
    except KeyboardInterrupt:
        # A second Ctrl-C while stopping, or one before the traps were set.
        running.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
