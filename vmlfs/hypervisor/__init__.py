"""libvirt for vmlfs: connect by URI, domain snapshots, consistent backup points, domain XML.

The modules under this package are the only ones that import libvirt;
everything else calls the names re-exported here (see docs/hypervisor.md).
Every call blocks: from trio, run them through ``trio.to_thread.run_sync``.
"""

from vmlfs.hypervisor.connection import (
    DomainInfo,
    check_uri,
    connect,
    define_and_start,
    domain_address,
    domain_state,
    list_domains,
    lookup_domain,
    open_connection,
    remove_domain,
    watch_running,
)
from vmlfs.hypervisor.domain_xml import build_domain_xml, detect_virt_type, parse_xml
from vmlfs.hypervisor.session import LibvirtSession
from vmlfs.hypervisor.snapshots import (
    backup_hook,
    backup_point,
    consistent,
    create_snapshot,
    default_snapshot_name,
    delete_snapshot,
    LIST_FILTERS,
    list_snapshots,
    redefine_snapshot,
    revert_snapshot,
    snapshot_family,
    snapshot_xml,
)
from vmlfs.hypervisor.storage import (
    Disk,
    base_volume,
    console_log_path,
    domain_volumes,
    format_of,
    open_pool,
)
from vmlfs.hypervisor.storage import delete as delete_volume
from vmlfs.hypervisor.storage import overlay as overlay_volume
from vmlfs.hypervisor.storage import tail as volume_tail
from vmlfs.hypervisor.storage import upload as upload_volume
from vmlfs.hypervisor.tree import SnapshotInfo, render_tree

__all__ = [
    "LIST_FILTERS",
    "Disk",
    "DomainInfo",
    "LibvirtSession",
    "SnapshotInfo",
    "backup_hook",
    "base_volume",
    "console_log_path",
    "delete_volume",
    "domain_volumes",
    "format_of",
    "open_pool",
    "overlay_volume",
    "remove_domain",
    "upload_volume",
    "volume_tail",
    "watch_running",
    "backup_point",
    "build_domain_xml",
    "check_uri",
    "connect",
    "define_and_start",
    "domain_address",
    "consistent",
    "create_snapshot",
    "default_snapshot_name",
    "delete_snapshot",
    "detect_virt_type",
    "domain_state",
    "list_domains",
    "list_snapshots",
    "lookup_domain",
    "open_connection",
    "parse_xml",
    "redefine_snapshot",
    "render_tree",
    "revert_snapshot",
    "snapshot_family",
    "snapshot_xml",
]
