"""A real single-node Apache Kafka 4.x broker (KRaft, broker+controller) run by the project.

The jars come from Maven Central through `mvn` (scripts/kafka/pom.xml) into the git-ignored
`.cache/kafka`; storage, logs and the pid file live under `var/broker-<port>`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cli.local import REPO_ROOT

POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
CACHE = REPO_ROOT / ".cache" / "kafka"
LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


class BrokerError(RuntimeError):
    pass


@dataclass(frozen=True)
class BrokerConfig:
    port: int = 9092
    controller_port: int | None = None
    var_dir: Path = REPO_ROOT / "var"
    heap: str = "512m"

    @property
    def home(self) -> Path:
        return self.var_dir / f"broker-{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"


def _log(msg: str) -> None:
    print(f"[broker] {msg}", file=sys.stderr, flush=True)


def kafka_version() -> str:
    text = POM.read_text()
    return text.split("<kafka.version>", 1)[1].split("<", 1)[0]


def fetch_jars() -> Path:
    """Resolve the broker's jars with Maven once; later calls reuse the cache."""
    libs = CACHE / kafka_version() / "libs"
    stamp = libs / ".complete"
    if stamp.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("mvn is not installed: install Maven (Debian package 'maven') and Java 17+")
    _log(f"fetching Apache Kafka {kafka_version()} and its dependencies from Maven Central ...")
    libs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BrokerError(f"mvn could not resolve Kafka:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    stamp.write_text(kafka_version())
    return libs


def _classpath(libs: Path) -> str:
    return os.pathsep.join(str(p) for p in sorted(libs.glob("*.jar")))


def _server_properties(cfg: BrokerConfig) -> str:
    cport = cfg.controller_port or cfg.port + 1
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cport}",
            f"listeners=PLAINTEXT://127.0.0.1:{cfg.port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={cfg.home / 'data'}",
            "num.partitions=12",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=12",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def pid_of(cfg: BrokerConfig) -> int | None:
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def reset_storage(cfg: BrokerConfig) -> bool:
    """Drop the stored topics of a broker that is not running (its KRaft storage is formatted
    again at the next start): for the test broker, whose topics are each test's own and only
    pile up from run to run. Refuses while this broker, or anything on its port, runs; returns
    whether there was storage to drop."""
    if pid_of(cfg) is not None or port_open("127.0.0.1", cfg.port):
        raise BrokerError(f"a broker runs at {cfg.bootstrap}: its storage is not dropped under it")
    data = cfg.home / "data"
    if not data.exists():
        return False
    shutil.rmtree(data)
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


async def cluster_id(bootstrap: str, timeout_s: float = 5.0) -> str:
    """The cluster id the broker reports: proof that a real broker answers."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        return str((await admin.describe_cluster())["cluster_id"])
    finally:
        await admin.close()


def wait_ready(bootstrap: str, timeout_s: float = 90.0, proc: subprocess.Popen[bytes] | None = None) -> str:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with status {proc.returncode} while starting")
        try:
            return asyncio.run(cluster_id(bootstrap))
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.5)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout_s:.0f}s: {last!r}")


def start(cfg: BrokerConfig) -> str:
    """Start the broker unless it already runs; returns its bootstrap address."""
    if pid_of(cfg) is not None:
        wait_ready(cfg.bootstrap)
        _log(f"already running at {cfg.bootstrap}")
        return cfg.bootstrap
    # Another checkout's broker (or one started by hand) may already serve this port, or one
    # may still be shutting down on it: wait a little for it to answer or to go away.
    deadline = time.monotonic() + 15
    while port_open("127.0.0.1", cfg.port):
        try:
            cid = asyncio.run(cluster_id(cfg.bootstrap, timeout_s=2))
        except Exception:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"port {cfg.port} is taken by something that is not a Kafka broker; choose --port"
                ) from None
            time.sleep(0.5)
            continue
        _log(f"a Kafka broker (cluster {cid}) already answers at {cfg.bootstrap}; using it")
        return cfg.bootstrap
    libs = fetch_jars()
    cp = _classpath(libs)
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java is not installed: Kafka 4 needs Java 17 or newer")
    cfg.home.mkdir(parents=True, exist_ok=True)
    props = cfg.home / "server.properties"
    props.write_text(_server_properties(cfg))
    (cfg.home / "log4j2.yaml").write_text(LOG4J2)
    if not (cfg.home / "data" / "meta.properties").exists():
        cluster = (
            subprocess.run(
                [java, "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        fmt = subprocess.run(
            [java, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(props)],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")
        _log(f"formatted KRaft storage in {cfg.home / 'data'} (cluster {cluster})")
    log = open(cfg.log_file, "ab")
    proc = subprocess.Popen(
        [
            java,
            f"-Xmx{cfg.heap}",
            f"-Xms{cfg.heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={cfg.home / 'log4j2.yaml'}",
            "-cp",
            cp,
            "kafka.Kafka",
            str(props),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    cfg.pid_file.write_text(str(proc.pid))
    try:
        cid = wait_ready(cfg.bootstrap, proc=proc)
    except BrokerError:
        tail = cfg.log_file.read_text(errors="replace")[-3000:]
        stop(cfg)
        raise BrokerError(f"broker did not start; last log lines:\n{tail}") from None
    _log(f"Apache Kafka {kafka_version()} (KRaft) ready at {cfg.bootstrap}, cluster {cid}")
    return cfg.bootstrap


def stop(cfg: BrokerConfig, timeout_s: float = 30.0) -> bool:
    """SIGTERM the broker (a controlled shutdown) and wait; SIGKILL only past the timeout."""
    pid = pid_of(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.2)
    else:
        _log("broker did not stop in time; killing it")
        os.kill(pid, signal.SIGKILL)
    _reap(pid)
    cfg.pid_file.unlink(missing_ok=True)
    _log(f"stopped broker at {cfg.bootstrap}")
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(cfg: BrokerConfig) -> dict[str, object]:
    pid = pid_of(cfg)
    out: dict[str, object] = {"bootstrap": cfg.bootstrap, "pid": pid, "running": pid is not None}
    if pid is not None:
        try:
            out["cluster_id"] = asyncio.run(cluster_id(cfg.bootstrap))
        except Exception as exc:
            out["error"] = repr(exc)
    return out
