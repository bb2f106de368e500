"""The use cases of vmlfs, each written once and called by every front end.

A backup asked for with ``vmlfs backup``, with ``touch control/snapshot`` in
a mount, or (later) from the web page is the same call to
:func:`vmlfs.app.backups.take_backup`; the front ends (cli/, fs/, webdav/,
winfsp_bridge/) differ only in how a request arrives and how its progress
and outcome are shown. A :class:`vmlfs.app.session.Session` carries what a
front end knows of its surroundings: where the store is, the host-key
policies, the libvirt connection and the image repository.
"""
