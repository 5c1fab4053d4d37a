"""Scale-out on a clustered broker (issue 16 items 5 and 6): a local NATS cluster with
MQTT listeners (:class:`BrokerCluster`), spike stage; see ``docs/cluster-plan.md``."""

from sef.cluster._failover import (
    cluster_client_id,
    parse_url_list,
    start_index,
    url_list_resolver,
)
from sef.cluster._jetstream import (
    IngestMessage,
    SharedIngest,
    read_retained,
    subject_to_topic,
    topic_to_subject,
)
from sef.cluster._local import LocalCluster, WorkerProcess
from sef.cluster._nats import (
    MIN_VERSION,
    BrokerCluster,
    ClusterNotFound,
    NatsNode,
    find_nats_server,
    nats_server_version,
)
from sef.cluster._source import ClusterSource
from sef.cluster._worker import WorkerEMS

__all__ = [
    "MIN_VERSION",
    "BrokerCluster",
    "ClusterNotFound",
    "ClusterSource",
    "IngestMessage",
    "LocalCluster",
    "NatsNode",
    "SharedIngest",
    "WorkerEMS",
    "WorkerProcess",
    "cluster_client_id",
    "find_nats_server",
    "nats_server_version",
    "parse_url_list",
    "read_retained",
    "start_index",
    "subject_to_topic",
    "topic_to_subject",
    "url_list_resolver",
]
