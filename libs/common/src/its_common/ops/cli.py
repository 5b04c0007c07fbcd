"""``its-ops``: ITS operations through the Kubernetes API, in a pod (its ServiceAccount) or with a
kubeconfig (``--kubeconfig``, ``KUBECONFIG`` or ~/.kube/config).

  its-ops train --from 2025-01-02 --to 2025-03-31 [--follow] [-- extra trainer args]
  its-ops backfill --from 2025-01-02 --to 2025-01-31 --symbol NVDA,MSFT [--follow]
  its-ops follow JOB          progress and logs until the Job finishes (exit 1 when it failed)
  its-ops promote BUNDLE      inference switches to it at the next session boundary
  its-ops rollback            back to the previously promoted bundle
  its-ops current             the promoted bundle and the history

Outside a cluster, ``promote``/``rollback``/``current`` with ``--file PATH`` work on the file that
inference reads (``ITS_INFERENCE_BUNDLE_VERSION_FILE``) instead of the ConfigMap.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from its_common import kube
from its_common.ops import jobs, promote
from its_common.promotion import decode_history, encode_history

EXIT_FAILED = 1
EXIT_USAGE = 2


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from exc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="its-ops", description="ITS operations through Kubernetes")
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig (default: in-cluster, KUBECONFIG)"
    )
    p.add_argument("--namespace", "-n", default=None, help="default: the pod's or the context's")
    p.add_argument("--release", default="its", help="the Helm release name (default: its)")
    sub = p.add_subparsers(dest="command", required=True)
    for kind in jobs.JOB_KINDS:
        job = sub.add_parser(kind, help=f"launch a {kind} Job from the chart's template")
        job.add_argument("--from", dest="first", type=_date, required=True)
        job.add_argument("--to", dest="last", type=_date, required=True)
        job.add_argument("--name", default=None, help="Job name (default: <release>-<kind>-<time>)")
        job.add_argument("--follow", action="store_true", help="follow progress and logs")
        if kind == "backfill":
            job.add_argument("--symbol", required=True, help="tickers, e.g. NVDA,MSFT")
        job.add_argument("extra", nargs="*", help="more arguments for the Job's command")
    follow = sub.add_parser("follow", help="follow a Job's progress and logs")
    follow.add_argument("job")
    follow.add_argument("--poll", type=float, default=2.0, help="seconds between checks")
    for name, text in (
        ("promote", "promote a bundle to inference"),
        ("rollback", "back to the previous bundle"),
        ("current", "show the promotion"),
    ):
        cmd = sub.add_parser(name, help=text)
        if name == "promote":
            cmd.add_argument("bundle")
        cmd.add_argument("--file", default=None, help="no cluster: the file inference reads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command in ("promote", "rollback", "current") and args.file:
            return _file_promotion(args)
        target = kube.connect(args.kubeconfig, args.namespace)
        core = client.CoreV1Api(target.api)
        batch = client.BatchV1Api(target.api)
        ns = target.namespace
        if args.command in jobs.JOB_KINDS:
            extra = list(args.extra)
            if args.command == "backfill":
                extra = ["--symbol", args.symbol, *extra]
            template = jobs.load_template(core, ns, args.release, args.command)
            name = args.name or jobs.job_name(args.command, args.release)
            job = jobs.build_job(
                template, name, jobs.job_args(args.command, args.first, args.last, extra)
            )
            created = jobs.create_job(batch, ns, job)
            print(f"job {ns}/{created} created")
            if not args.follow:
                return 0
            return _follow(batch, core, ns, created, 2.0)
        if args.command == "follow":
            return _follow(batch, core, ns, args.job, args.poll)
        if args.command == "promote":
            promo = promote.promote(core, ns, args.release, args.bundle)
            print(f"promoted {promo.current} (inference switches at the next session boundary)")
        elif args.command == "rollback":
            promo = promote.rollback(core, ns, args.release)
            print(f"rolled back to {promo.current} (at the next session boundary)")
        else:
            promo, _ = promote.read(core, ns, args.release)
            print(json.dumps({"bundle": promo.current, "history": promo.history}))
        return 0
    except jobs.OpsError as exc:
        print(f"its-ops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiException as exc:
        print(f"its-ops: Kubernetes API: {exc.status} {exc.reason}", file=sys.stderr)
        return EXIT_FAILED


def _follow(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str, name: str, poll: float
) -> int:
    state = jobs.follow(batch, core, ns, name, lambda line: print(line, flush=True), poll)
    return 0 if state.condition == "Complete" else EXIT_FAILED


def _file_promotion(args: argparse.Namespace) -> int:
    """The same promotion on a local file (``bundle`` text) and its ``.history`` neighbour."""
    path = Path(args.file)
    history_path = path.with_name(path.name + ".history")
    current = path.read_text("utf-8").strip() if path.exists() else ""
    history = decode_history(history_path.read_text("utf-8")) if history_path.exists() else []
    if args.command == "promote":
        if args.bundle != current:
            history = [*history, current] if current else history
            current = args.bundle
    elif args.command == "rollback":
        if not history:
            raise jobs.OpsError("nothing to roll back to: no earlier promotion")
        current, history = history[-1], history[:-1]
    else:
        print(json.dumps({"bundle": current, "history": history}))
        return 0
    history_path.write_text(encode_history(history), "utf-8")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(current + "\n", "utf-8")
    tmp.replace(path)  # inference never reads a half-written name
    print(f"{args.command}: {current}")
    return 0
