"""``ftstudy operator``: wait for leadership, then run kopf with the FineTuneStudy handlers.

Exit codes: 0 on a clean stop (SIGTERM), 2 for bad arguments or credentials, 70 when leadership was lost (the
process stops acting at once; its Deployment restarts it as a standby).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from typing import Any

from ftstudy import __version__, redact
from ftstudy.kube.workqueue import RECONCILE_THREADS

EXIT_LOST_LEADERSHIP = 70
log = logging.getLogger("ftstudy.operator")


def add_arguments(p: argparse.ArgumentParser) -> None:
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="watch FineTuneStudies in this namespace (repeat for several); default: $WATCH_NAMESPACES "
        "(comma-separated), else the whole cluster",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch the whole cluster")
    p.add_argument("--kubeconfig", default=None, help="default: in-cluster service account, else $KUBECONFIG")
    p.add_argument("--no-leader-election", action="store_true", help="for a single replica you are sure of")
    p.add_argument(
        "--lease-namespace",
        default=None,
        help="namespace of the leader-election Lease (default: $POD_NAMESPACE, else the first watched namespace)",
    )
    p.add_argument("--lease-name", default="ftstudy-operator")
    p.add_argument(
        "--lease-seconds",
        type=int,
        default=15,
        help="the Lease's duration: a standby takes over this long after the leader stopped renewing; the leader "
        "tries to renew every 2/15 of it (2 s) and stops acting after two thirds (10 s) without a renewal",
    )
    p.add_argument("--identity", default=None, help="this replica's name in the Lease (default: hostname-pid)")
    p.add_argument("--liveness", default=None, help="kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument(
        "--poll-seconds",
        type=float,
        default=10.0,
        help="how often each study is reconciled when nothing wakes it earlier (its trainers' reports and its Jobs "
        "that end do): the safety net",
    )
    p.add_argument(
        "--unnotified-poll-seconds",
        type=float,
        default=2.0,
        help="at least this often while the study's reports cannot wake it (--no-notifications, a database other "
        "than PostgreSQL, the listener reconnecting)",
    )
    p.add_argument(
        "--no-notifications",
        action="store_true",
        help="do not LISTEN for trainers' reports on PostgreSQL (decide at the next poll only; for comparison)",
    )
    p.add_argument(
        "--secret-refresh-seconds",
        type=float,
        default=60.0,
        help="a running study's storage Secret is read again after this long (sooner when its database "
        "refuses the URL in use), instead of on every reconcile",
    )
    p.add_argument("--stuck-seconds", type=float, default=120.0, help="a trial pod that cannot start fails after")
    p.add_argument(
        "--reconcile-threads",
        type=int,
        default=RECONCILE_THREADS,
        help="studies reconciled at once, whatever their number (each study by one thread at a time)",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="serve Prometheus metrics on this port at /metrics (0: none); docs/observability.md",
    )
    p.add_argument("--metrics-address", default="0.0.0.0", help="the address the metrics port listens on")
    reports = p.add_argument_group("report endpoint (trials report over HTTPS and hold no database login)")
    reports.add_argument(
        "--report-url",
        default=None,
        help="the endpoint's URL as trial pods reach it, e.g. https://ftstudy-operator.ftstudy.svc:8443; with it "
        "the leader serves reports and trials get no storage URL; without it trials write to the database",
    )
    reports.add_argument("--report-address", default="0.0.0.0", help="the address the endpoint listens on")
    reports.add_argument("--report-port", type=int, default=8443, help="the port the endpoint listens on")
    reports.add_argument(
        "--report-tls-secret",
        default="ftstudy-report-tls",
        help="the Secret (in $POD_NAMESPACE, else the Lease's namespace) that holds the endpoint's CA and serving "
        "certificate; it must exist (the chart creates it empty), the operator fills and renews it",
    )
    reports.add_argument(
        "--report-tls-external",
        action="store_true",
        help="the TLS Secret is written and renewed by cert-manager (tls.crt, tls.key, ca.crt), not by the operator: "
        "it only reads it (get), waits until it is issued, and reloads it when it changes",
    )
    reports.add_argument(
        "--report-tls-check-seconds",
        type=float,
        default=None,
        metavar="S",
        help="how often the TLS Secret is read again for a renewed certificate (default: 60 with "
        "--report-tls-external, where cert-manager renews it, else 12 hours: the operator renews its own)",
    )
    reports.add_argument(
        "--report-dns-name",
        action="append",
        default=[],
        metavar="NAME",
        help="another name (or IP address) the serving certificate names, besides --report-url's host (repeat)",
    )
    p.add_argument(
        "--database-password-secret",
        default=None,
        metavar="NAME",
        help="the chart's bundled PostgreSQL: the Secret (in $POD_NAMESPACE, else the Lease's namespace) whose "
        "'password' the operator generates once if it has none, and then hands libpq for the Secret's 'host', "
        "'port', 'database' and 'username' only (a password file, never PGPASSWORD, which libpq sends to any "
        "server); it must exist (the chart creates it without the password)",
    )
    policy = p.add_argument_group("trial policy (what a study's trialTemplate may ask for; docs/operator.md)")
    policy.add_argument(
        "--trial-service-account",
        action="append",
        default=[],
        metavar="NAME",
        help="a ServiceAccount trials may run as, besides each namespace's default (repeat for several)",
    )
    policy.add_argument(
        "--trial-volume-type",
        action="append",
        default=None,
        metavar="TYPE",
        help="a volume type trials may use (repeat; default: persistentVolumeClaim, emptyDir, ephemeral, configMap, "
        "downwardAPI; never hostPath)",
    )
    policy.add_argument(
        "--storage-secret",
        action="append",
        default=None,
        metavar="NAME",
        help="a Secret that studies may name as spec.storage.secretRef (repeat; default: ftstudy-db); the operator "
        "reads no other",
    )
    policy.add_argument("--trial-toleration-key", action="append", default=None, metavar="KEY",
                        help="a taint key trials may tolerate (repeat; default: nvidia.com/gpu)")  # fmt: skip
    policy.add_argument("--trial-node-selector-key", action="append", default=None, metavar="KEY",
                        help="a node label key trials may select by (repeat; default: the NVIDIA GPU labels, "
                        "instance type, zone, arch)")  # fmt: skip
    policy.add_argument("--trial-priority-class", action="append", default=None, metavar="NAME",
                        help="a PriorityClass trials may use (repeat; default: batch-low)")  # fmt: skip
    policy.add_argument("--trial-workload-priority-class", action="append", default=None, metavar="NAME",
                        help="a Kueue WorkloadPriorityClass trials may use (repeat; default: none)")  # fmt: skip
    policy.add_argument("--trial-claim", action="append", default=None, metavar="NAME",
                        help="a claim trials may mount (repeat; default: ftstudy-artifacts)")  # fmt: skip
    policy.add_argument("--trial-ephemeral-max", default=None, metavar="QUANTITY",
                        help="the most storage a trial's ephemeral volume may request (default: 100Gi)")  # fmt: skip
    policy.add_argument("--artifact-secret", action="append", default=None, metavar="NAME",
                        help="a Secret of object store credentials that trialTemplate.artifactSecret may name, read "
                        "by the trial pods only, through envFrom (repeat; default: ftstudy-object-store)")  # fmt: skip


def _namespaces(args: argparse.Namespace) -> list[str]:
    if args.all_namespaces:
        return []
    if args.namespace:
        return [n for item in args.namespace for n in item.split(",") if n]
    return [n.strip() for n in os.environ.get("WATCH_NAMESPACES", "").split(",") if n.strip()]


def _serve_metrics(address: str, port: int) -> None:
    """Serve the operator's registry (standbys too: ``ftstudy_leader`` 0). A port that cannot be bound is logged,
    not fatal: the operator's work does not depend on being watched."""
    if port <= 0:
        return
    from prometheus_client import start_http_server

    from ftstudy.kube.metrics import METRICS

    try:
        start_http_server(port, addr=address, registry=METRICS.registry)
    except OSError as error:
        log.error("cannot serve metrics on %s:%d: %s; running without them", address, port, error)
    else:
        log.info("serving metrics on http://%s:%d/metrics", address, port)


RENEW_CHECK_SECONDS = 12 * 3600.0  # how often the serving certificate's expiry is looked at
EXTERNAL_CHECK_SECONDS = 60.0  # how often a Secret cert-manager renews is read again (--report-tls-external)


def _report_server(
    args: argparse.Namespace, kube: Any, namespace: str | None, settings: Any, stop: threading.Event
) -> Any:
    """The report endpoint (not yet started), its certificate made or renewed first, and a thread that renews it
    while the operator runs. Trials' Jobs get the URL and the CA through ``settings.reports``."""
    from urllib.parse import urlsplit

    from ftstudy.kube import certs, jobs
    from ftstudy.kube.api import ApiError
    from ftstudy.kube.report_server import ReportHandler, ReportServer

    url = urlsplit(args.report_url)
    if url.scheme != "https" or not url.hostname:
        raise ValueError(f"--report-url must be an https:// URL with a host, got {args.report_url!r}")
    if namespace is None:
        raise ValueError("give $POD_NAMESPACE or --lease-namespace: where the report TLS Secret is")
    hosts = list(dict.fromkeys([url.hostname, *args.report_dns_name]))
    secret = args.report_tls_secret

    def current() -> certs.Bundle:
        if args.report_tls_external:
            return certs.read_external(kube, namespace, secret, hosts)
        return certs.ensure_retrying(kube, namespace, secret, hosts)

    bundle: certs.Bundle | None = None
    while bundle is None:
        try:
            bundle = current()
        except ApiError as error:
            if error.status != 404:
                raise
            if not args.report_tls_external:
                raise ValueError(f"Secret {namespace}/{secret} does not exist: create it empty (the chart does), "
                                 "the operator fills it") from None  # fmt: skip
            log.error("waiting for the report endpoint's certificate: Secret %s/%s does not exist yet (cert-manager "
                      "creates it when it issues the chart's Certificate)", namespace, secret)  # fmt: skip
        except certs.NotIssued as error:
            log.error("waiting for the report endpoint's certificate: %s", error)
        if bundle is None and stop.wait(5.0):
            raise ValueError(
                f"stopped while waiting for the report endpoint's certificate in Secret {namespace}/{secret}"
            )
    settings.reports = jobs.Reports(args.report_url, bundle.ca_pem)
    server = ReportServer(ReportHandler(kube, lambda uid: None), bundle, args.report_address, args.report_port)

    def renew() -> None:
        served = bundle
        every = args.report_tls_check_seconds or (
            EXTERNAL_CHECK_SECONDS if args.report_tls_external else RENEW_CHECK_SECONDS
        )
        while not stop.wait(every):
            try:
                fresh = current()
            except Exception as error:  # the current certificate still serves: try again at the next check
                log.error("could not renew the report endpoint's certificate: %s", error)
                continue
            if fresh != served:
                server.renew(fresh)
                if fresh.ca_pem != served.ca_pem:  # new trials verify against the new CA (running ones keep theirs)
                    settings.reports = jobs.Reports(args.report_url, fresh.ca_pem)
                log.info("serving the report endpoint's renewed certificate from Secret %s/%s", namespace, secret)
                served = fresh

    threading.Thread(target=renew, name="ftstudy-report-tls", daemon=True).start()
    return server


def run(args: argparse.Namespace) -> int:
    import kopf

    from ftstudy.kube import fencing
    from ftstudy.kube.api import ApiError, Kube, load_config
    from ftstudy.kube.handlers import Workers, register
    from ftstudy.kube.leader import LeaderElector
    from ftstudy.kube.metrics import METRICS
    from ftstudy.kube.policy import TrialPolicy
    from ftstudy.kube.reconciler import Settings
    from ftstudy.kube.watch_cache import TrialObjects
    from ftstudy.notify import Notifications

    try:
        policy = TrialPolicy.of(args.trial_service_account, args.trial_volume_type, args.storage_secret,
                                args.trial_toleration_key, args.trial_node_selector_key, args.trial_priority_class,
                                args.trial_claim, args.trial_ephemeral_max, args.artifact_secret,
                                args.trial_workload_priority_class)  # fmt: skip
    except ValueError as error:
        print(f"ftstudy operator: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    redact.install_log_filter("kopf.objects")  # every log line, and kopf's Events, hide the URLs read from now on
    try:
        kube = Kube(load_config(args.kubeconfig))
    except Exception as error:
        print(f"ftstudy operator: no Kubernetes credentials: {error}", file=sys.stderr)
        return 2
    namespaces = _namespaces(args)
    # Where the operator's own Secrets are (the report endpoint's TLS, the bundled database's password).
    own = os.environ.get("POD_NAMESPACE") or args.lease_namespace or next(iter(namespaces), None)
    if args.database_password_secret:  # every replica: any of them may lead, and leading connects
        from ftstudy.kube import db_password

        try:
            if own is None:
                raise ValueError("give $POD_NAMESPACE or --lease-namespace: where the Secret is")
            db_password.use(kube, own, args.database_password_secret)
        except (ValueError, ApiError) as error:
            print(f"ftstudy operator: cannot read the bundled PostgreSQL's password from Secret "
                  f"{args.database_password_secret}: {error}", file=sys.stderr)  # fmt: skip
            return 2
    _serve_metrics(args.metrics_address, args.metrics_port)
    stop = threading.Event()
    # Renewals go on until every reconcile thread has stopped: a leader stops renewing (and hands the Lease over)
    # only once nothing of it can act any more.
    renewals = threading.Event()
    elector = None
    if not args.no_leader_election:
        lease_namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE") or next(iter(namespaces), None)
        if lease_namespace is None:
            print("ftstudy operator: give --lease-namespace (or $POD_NAMESPACE) when watching the whole cluster",
                  file=sys.stderr)  # fmt: skip
            return 2
        identity = args.identity or f"{socket.gethostname()}-{os.getpid()}"
        # the replica in every request it makes: the API server's audit log then tells which replica acted, and when
        kube.user_agent = f"ftstudy-operator/{__version__} ({identity})"
        seconds = max(3, args.lease_seconds)
        # client-go's cadence (15 s lease, 10 s renew deadline, a try every 2 s): a renewal slowed down by a busy
        # API server or process still has several tries before the deadline (with a try every third of the lease,
        # one slow renewal of 100 studies x 10 trials on two cores cost the leadership)
        elector = LeaderElector(kube, lease_namespace, args.lease_name, identity, lease_seconds=seconds,
                                renew_seconds=seconds * 2 / 15, renew_deadline=seconds * 2 / 3)  # fmt: skip
        if not elector.wait_until_leader(stop):
            return 0
        METRICS.leader.set(1)

        def lost() -> None:
            log.critical("leadership lost: stopping at once so that only one replica acts")
            os._exit(EXIT_LOST_LEADERSHIP)

        elector.keep_leading(lost, renewals)
        fencing.install(elector.guard(lost))  # no write leaves this process once it may no longer lead
    else:
        METRICS.leader.set(1)

    settings = Settings(poll_seconds=args.poll_seconds, unnotified_poll_seconds=args.unnotified_poll_seconds,
                        secret_refresh_seconds=args.secret_refresh_seconds, stuck_seconds=args.stuck_seconds,
                        policy=policy)  # fmt: skip
    server = None
    if args.report_url:
        try:
            server = _report_server(args, kube, own, settings, stop)
        except (ValueError, OSError, ApiError) as error:
            print(f"ftstudy operator: cannot serve reports: {error}", file=sys.stderr)
            return 2
    workers = Workers(kube, settings, notifications=Notifications(enabled=not args.no_notifications),
                      threads=args.reconcile_threads)  # fmt: skip
    # the operator's Jobs and pods, watched (a Job that ends wakes its study) and kept for the passes to read
    objects = TrialObjects(kube, namespaces, workers.job_changed).start()
    settings.objects = objects
    if server is not None:
        server.server.report_handler.lookup = workers.report_target
        server.start()
        log.info("serving trial reports at %s (listening on %s:%d)", args.report_url, args.report_address,
                 server.port)  # fmt: skip
    register(workers)

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's would repeat it
        settings.persistence.finalizer = "ftstudy.io/cleanup"
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        # No cluster-wide reads of namespaces or CRDs, which least-privilege RBAC does not grant (in either mode):
        # with scanning off kopf takes the watched namespaces as given and discovers the CRD once at start-up.
        settings.scanning.disabled = True

    log.info("watching %s", ", ".join(namespaces) if namespaces else "every namespace")
    try:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
        )
    finally:
        stop.set()
        objects.stop()
        if server is not None:
            server.stop()
        stopped = workers.stop_all()
        renewals.set()
        if elector is not None and stopped:
            elector.release()
        elif elector is not None:
            # A thread still inside a pass may act until this process is gone: the Lease is not handed over, so a
            # standby waits for it to expire (--lease-seconds after the last renewal, just made); the process ends
            # now, and its threads with it.
            log.error("a reconcile thread did not stop in time: leaving the Lease to expire instead of handing it "
                      "over, and exiting")  # fmt: skip
    return 0
